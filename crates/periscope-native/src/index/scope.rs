//! Lexical scopes of one compilation unit: functions, blocks and inlined calls, with the variables
//! each declares. Used to find the names visible at a code address.

use super::load::{all_ranges, origin_entry};
use super::{attr_str, ObjectIndex, R};
use crate::error::NativeError;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    Function,
    Block,
    Inlined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypeRef {
    pub unit: u32,
    pub offset: gimli::UnitOffset,
}

#[derive(Debug, Clone)]
pub struct Var {
    pub name: String,
    pub ty: Option<TypeRef>,
    /// `DW_AT_location`: an expression or a location list; `None` means optimized out.
    pub location: Option<gimli::AttributeValue<R>>,
    /// `DW_AT_const_value`: the value itself, where the compiler knew it (a constant-propagated
    /// parameter of a `.constprop` clone), little-endian.
    pub const_value: Option<Vec<u8>>,
    pub is_param: bool,
    pub decl_line: Option<u32>,
}

#[derive(Debug)]
pub struct Scope {
    pub kind: ScopeKind,
    pub ranges: Vec<(u64, u64)>,
    pub parent: Option<usize>,
    pub offset: gimli::UnitOffset,
    pub vars: Vec<Var>,
    /// `DW_AT_frame_base` of a function scope.
    pub frame_base: Option<gimli::AttributeValue<R>>,
    /// For an inlined call: the callee's name, and where in the caller the call is.
    pub inlined: Option<InlinedCall>,
    /// The first parameter when it has no name (rustc's `self` of a closure or a coroutine's
    /// resume function): an `async fn`'s state machine is reached through it
    /// ([`crate::coroutine`]).
    pub env_param: Option<Var>,
}

#[derive(Debug, Clone)]
pub struct InlinedCall {
    pub name: String,
    pub call_file: Option<std::path::PathBuf>,
    pub call_line: Option<u32>,
}

/// One level of the (possibly inlined) call chain at an address, innermost first.
#[derive(Debug, Clone)]
pub struct InlineLevel {
    /// The inlined callee's name; `None` for the physical function itself.
    pub name: Option<String>,
    pub vars: Vec<Var>,
    /// Where this level calls the level inside it (from the inner level's call site).
    pub call_site: Option<(std::path::PathBuf, u32)>,
}

impl Scope {
    pub fn contains(&self, pc: u64) -> bool {
        self.ranges.iter().any(|(lo, hi)| pc >= *lo && pc < *hi)
    }
}

pub struct UnitScopes {
    pub scopes: Vec<Scope>,
    /// The namespace path (`alloc::string`) of each named type DIE, for qualified type names.
    pub type_prefix: HashMap<gimli::UnitOffset, String>,
}

/// The variables visible at one address, innermost first, and what is needed to read them.
#[derive(Debug, Clone)]
pub struct Visible {
    pub vars: Vec<Var>,
    /// The DIE of the innermost function or inlined call around the address: two hits at one
    /// line are the same execution only when they share it.
    pub scope_id: gimli::UnitOffset,
    pub frame_base: Option<gimli::AttributeValue<R>>,
    /// The unnamed first parameter of that function or inlined call (see [`Scope::env_param`]).
    pub env_param: Option<Var>,
}

impl UnitScopes {
    pub(super) fn parse(index: &ObjectIndex, unit_idx: u32) -> Result<UnitScopes, NativeError> {
        let dwarf = &index.dwarf;
        let unit = &index
            .units
            .get(unit_idx as usize)
            .ok_or_else(|| NativeError::Dwarf(format!("no unit {unit_idx}")))?
            .unit;
        let mut scopes: Vec<Scope> = Vec::new();
        let mut type_prefix = HashMap::new();
        // Stack of (depth, scope index or None, namespace name or None).
        let mut stack: Vec<(isize, Option<usize>, Option<String>)> = Vec::new();
        let mut cursor = unit.entries();
        while let Ok(Some(_)) = cursor.next_dfs() {
            let depth = cursor.depth();
            let Some(entry) = cursor.current() else { break };
            while stack.last().is_some_and(|(d, _, _)| *d >= depth) {
                stack.pop();
            }
            let parent_scope = stack.iter().rev().find_map(|(_, s, _)| *s);
            let tag = entry.tag();
            let name = entry
                .attr_value(gimli::DW_AT_name)
                .and_then(|v| attr_str(dwarf, unit, v));
            match tag {
                gimli::DW_TAG_subprogram
                | gimli::DW_TAG_lexical_block
                | gimli::DW_TAG_inlined_subroutine => {
                    let kind = match tag {
                        gimli::DW_TAG_subprogram => ScopeKind::Function,
                        gimli::DW_TAG_lexical_block => ScopeKind::Block,
                        _ => ScopeKind::Inlined,
                    };
                    let ranges = all_ranges(dwarf, unit, entry);
                    // Abstract instances and declarations have no code: their children are
                    // templates reached through abstract_origin, not scopes.
                    if ranges.is_empty() && kind != ScopeKind::Block {
                        if entry.has_children() {
                            stack.push((depth, None, None));
                        }
                        continue;
                    }
                    let idx = scopes.len();
                    scopes.push(Scope {
                        kind,
                        ranges,
                        parent: if kind == ScopeKind::Function {
                            None
                        } else {
                            parent_scope
                        },
                        offset: entry.offset(),
                        vars: Vec::new(),
                        frame_base: entry.attr_value(gimli::DW_AT_frame_base),
                        inlined: (kind == ScopeKind::Inlined)
                            .then(|| inlined_call(index, unit, unit_idx, entry)),
                        env_param: None,
                    });
                    if entry.has_children() {
                        stack.push((depth, Some(idx), None));
                    }
                }
                gimli::DW_TAG_variable | gimli::DW_TAG_formal_parameter => {
                    let Some(scope) = parent_scope else { continue };
                    // A block inside an abstract function has no ranges: skip variables whose
                    // enclosing scope has no code.
                    if scopes[scope].ranges.is_empty() && scopes[scope].kind == ScopeKind::Block {
                        continue;
                    }
                    let origin = origin_entry(&index.units, unit_idx, entry);
                    // An attribute of the DIE, else of its origin, with the unit it is in.
                    let attr = |at| match entry.attr_value(at) {
                        Some(v) => Some((unit_idx, v)),
                        None => origin
                            .as_ref()
                            .and_then(|(ou, o)| Some((*ou, o.attr_value(at)?))),
                    };
                    let ty = attr(gimli::DW_AT_type).and_then(|(u, v)| index.type_ref(u, Some(v)));
                    let Some(var_name) = attr(gimli::DW_AT_name)
                        .and_then(|(u, v)| attr_str(dwarf, &index.units.get(u as usize)?.unit, v))
                    else {
                        // rustc leaves a closure's and a coroutine's `self` unnamed; it is the
                        // way to an async fn's saved locals, so it is kept aside.
                        let s = &mut scopes[scope];
                        if tag == gimli::DW_TAG_formal_parameter
                            && s.kind != ScopeKind::Block
                            && s.env_param.is_none()
                            && !s.vars.iter().any(|v| v.is_param)
                        {
                            s.env_param = Some(Var {
                                name: String::new(),
                                ty,
                                location: entry.attr_value(gimli::DW_AT_location),
                                const_value: None,
                                is_param: true,
                                decl_line: None,
                            });
                        }
                        continue;
                    };
                    let decl_line = match attr(gimli::DW_AT_decl_line).map(|(_, v)| v) {
                        Some(gimli::AttributeValue::Udata(n)) => Some(n as u32),
                        _ => None,
                    };
                    scopes[scope].vars.push(Var {
                        name: var_name,
                        ty,
                        location: entry.attr_value(gimli::DW_AT_location),
                        const_value: attr(gimli::DW_AT_const_value)
                            .and_then(|(_, v)| const_bytes(v)),
                        is_param: tag == gimli::DW_TAG_formal_parameter,
                        decl_line,
                    });
                }
                gimli::DW_TAG_namespace
                | gimli::DW_TAG_structure_type
                | gimli::DW_TAG_class_type
                | gimli::DW_TAG_union_type
                | gimli::DW_TAG_enumeration_type
                | gimli::DW_TAG_base_type
                | gimli::DW_TAG_typedef => {
                    if tag != gimli::DW_TAG_namespace {
                        let prefix: Vec<&str> =
                            stack.iter().filter_map(|(_, _, n)| n.as_deref()).collect();
                        if !prefix.is_empty() {
                            type_prefix.insert(entry.offset(), prefix.join("::"));
                        }
                    }
                    if entry.has_children() {
                        stack.push((depth, None, name));
                    }
                }
                _ => {
                    if entry.has_children() {
                        stack.push((depth, None, None));
                    }
                }
            }
        }
        Ok(UnitScopes {
            scopes,
            type_prefix,
        })
    }

    /// The call chain at `pc` within one physical function: inlined callees innermost first,
    /// then the function itself, each with its own variables.
    pub fn inline_chain(&self, pc: u64) -> Vec<InlineLevel> {
        let Some(innermost) = self.scopes.iter().rposition(|s| s.contains(pc)) else {
            return Vec::new();
        };
        let mut levels = Vec::new();
        let mut vars: Vec<Var> = Vec::new();
        let mut call_site = None;
        let mut cur = Some(innermost);
        while let Some(i) = cur {
            let s = &self.scopes[i];
            for v in s.vars.iter().rev() {
                if !vars.iter().any(|w| w.name == v.name) {
                    vars.push(v.clone());
                }
            }
            match s.kind {
                ScopeKind::Block => {}
                ScopeKind::Inlined => {
                    let call = s.inlined.clone();
                    levels.push(InlineLevel {
                        name: call.as_ref().map(|c| c.name.clone()),
                        vars: std::mem::take(&mut vars),
                        call_site: call_site.take(),
                    });
                    call_site = call.and_then(|c| Some((c.call_file?, c.call_line?)));
                }
                ScopeKind::Function => {
                    levels.push(InlineLevel {
                        name: None,
                        vars: std::mem::take(&mut vars),
                        call_site: call_site.take(),
                    });
                    break;
                }
            }
            cur = s.parent;
        }
        levels
    }

    /// The variables of the physical function itself at `pc`: like [`Self::visible_at`], but
    /// passing over inlined calls the address may fall in (optimized code schedules inlined
    /// callees into the prologue), for a probe placed on the function.
    pub fn function_visible_at(&self, pc: u64) -> Option<Visible> {
        let innermost = self.scopes.iter().rposition(|s| s.contains(pc))?;
        let mut cur = Some(innermost);
        let mut vars: Vec<Var> = Vec::new();
        while let Some(i) = cur {
            let s = &self.scopes[i];
            match s.kind {
                // Everything collected so far was inside an inlined callee.
                ScopeKind::Inlined => vars.clear(),
                _ => {
                    for v in s.vars.iter().rev() {
                        if !vars.iter().any(|w| w.name == v.name) {
                            vars.push(v.clone());
                        }
                    }
                }
            }
            if s.kind == ScopeKind::Function {
                return Some(Visible {
                    vars,
                    scope_id: s.offset,
                    frame_base: s.frame_base.clone(),
                    env_param: s.env_param.clone(),
                });
            }
            cur = s.parent;
        }
        None
    }

    /// The variables of the inlined copy of `name` that contains `pc` (its parameters and the
    /// locals in scope there), passing over callees inlined into it: at the first instruction
    /// of an inlined copy there is often code of something inlined into it, where its own
    /// parameters would not look visible.
    pub fn inlined_visible_at(&self, pc: u64, name: &str) -> Option<Visible> {
        let innermost = self.scopes.iter().rposition(|s| s.contains(pc))?;
        let mut cur = Some(innermost);
        let mut vars: Vec<Var> = Vec::new();
        let mut found = None;
        let mut env_param = None;
        while let Some(i) = cur {
            let s = &self.scopes[i];
            if found.is_none() {
                let is_it = s.kind == ScopeKind::Inlined
                    && s.inlined.as_ref().is_some_and(|c| c.name == name);
                if s.kind == ScopeKind::Inlined && !is_it {
                    vars.clear(); // collected inside a callee inlined into it
                } else {
                    for v in s.vars.iter().rev() {
                        if !vars.iter().any(|w| w.name == v.name) {
                            vars.push(v.clone());
                        }
                    }
                }
                if is_it {
                    found = Some(s.offset);
                    env_param = s.env_param.clone();
                }
            }
            if s.kind == ScopeKind::Function {
                return found.map(|scope_id| Visible {
                    vars,
                    scope_id,
                    frame_base: s.frame_base.clone(),
                    env_param,
                });
            }
            cur = s.parent;
        }
        None
    }

    /// The variables visible at `pc`, innermost scope first, stopping at the enclosing function or
    /// inlined call (the caller's locals are not in scope inside an inlined callee).
    pub fn visible_at(&self, pc: u64) -> Option<Visible> {
        // The innermost scope is the last one in DIE order that contains pc.
        let innermost = self.scopes.iter().rposition(|s| s.contains(pc))?;
        let mut vars: Vec<Var> = Vec::new();
        let mut cur = Some(innermost);
        let mut scope_id = self.scopes[innermost].offset;
        let mut frame_base = None;
        let mut env_param = None;
        while let Some(i) = cur {
            let s = &self.scopes[i];
            for v in s.vars.iter().rev() {
                if !vars.iter().any(|w| w.name == v.name) {
                    vars.push(v.clone());
                }
            }
            if s.kind != ScopeKind::Block {
                scope_id = s.offset;
                env_param = s.env_param.clone();
                break;
            }
            cur = s.parent;
        }
        // The frame base belongs to the physical function, even inside inlined calls.
        let mut cur = Some(innermost);
        while let Some(i) = cur {
            if self.scopes[i].kind == ScopeKind::Function {
                frame_base = self.scopes[i].frame_base.clone();
                break;
            }
            cur = self.scopes[i].parent;
        }
        Some(Visible {
            vars,
            scope_id,
            frame_base,
            env_param,
        })
    }
}

/// Name and call site of an inlined call.
fn inlined_call(
    index: &ObjectIndex,
    unit: &gimli::Unit<R>,
    unit_idx: u32,
    entry: &gimli::DebuggingInformationEntry<R>,
) -> InlinedCall {
    let dwarf = &index.dwarf;
    let origin = origin_entry(&index.units, unit_idx, entry);
    let lang = index.unit_lang(unit_idx);
    let text = |at| {
        let (ou, o) = origin.as_ref()?;
        let v = o.attr_value(at)?;
        attr_str(dwarf, &index.units.get(*ou as usize)?.unit, v)
    };
    let linkage = text(gimli::DW_AT_linkage_name);
    let short = text(gimli::DW_AT_name);
    let name = match (linkage, lang) {
        (Some(l), super::Lang::Rust) => super::load::demangle(&l),
        (Some(l), super::Lang::Cpp) => super::load::strip_cpp_params(&super::load::demangle(&l)),
        (_, _) => short.unwrap_or_else(|| "<inlined>".into()),
    };
    let call_file = match entry.attr_value(gimli::DW_AT_call_file) {
        Some(gimli::AttributeValue::FileIndex(n)) | Some(gimli::AttributeValue::Udata(n)) => {
            unit.line_program.as_ref().and_then(|p| {
                let header = p.header();
                header
                    .file(n)
                    .map(|f| super::load::file_path(dwarf, unit, header, f))
            })
        }
        _ => None,
    };
    let call_line = match entry.attr_value(gimli::DW_AT_call_line) {
        Some(gimli::AttributeValue::Udata(n)) => Some(n as u32),
        _ => None,
    };
    InlinedCall {
        name,
        call_file,
        call_line,
    }
}

/// The bytes of a `DW_AT_const_value`, little-endian. Integer forms are widened to 8 bytes
/// (`DW_FORM_sdata` sign-extended; the fixed-size forms zero-extended, as compilers use them for
/// values that fit), so a reader takes the type's size from the front.
fn const_bytes(v: gimli::AttributeValue<R>) -> Option<Vec<u8>> {
    use gimli::Reader as _;
    Some(match v {
        gimli::AttributeValue::Data1(x) => u64::from(x).to_le_bytes().to_vec(),
        gimli::AttributeValue::Data2(x) => u64::from(x).to_le_bytes().to_vec(),
        gimli::AttributeValue::Data4(x) => u64::from(x).to_le_bytes().to_vec(),
        gimli::AttributeValue::Data8(x) => x.to_le_bytes().to_vec(),
        gimli::AttributeValue::Sdata(x) => x.to_le_bytes().to_vec(),
        gimli::AttributeValue::Udata(x) => x.to_le_bytes().to_vec(),
        gimli::AttributeValue::Block(b) => b.to_slice().ok()?.to_vec(),
        _ => return None,
    })
}
