//! C++ standard library types as users think of them (libstdc++, the GNU/Linux default), as
//! gdb's libstdc++ printers show them: strings, containers as lists and maps, smart pointers as
//! the pointers they hold, `optional`/`variant` as enums, `tuple`/`pair` as structs of their
//! elements, durations as `250ms`. Read from memory by DWARF layout only: no code of the target
//! runs and libstdc++'s Python printers are not used.
//!
//! Members are found by name under the base classes, element types are template parameters
//! (`_Tp`, `_Val`, `_Value`). A type is recognised by its name or, when a typedef renamed it
//! (`std::chrono::milliseconds`, `using Index = std::map<…>`), by the implementation class it
//! is built on (`_M_t` an `_Rb_tree`, a `_Deque_base` base, …). Node-based containers are
//! walked bounded by the element limit, with a step guard on each move: corrupt memory ends a
//! walk with a truncated value, never a hang.
//!
//! - `mod.rs`: which type is which, strings, vectors, smart pointers, lengths and elements for
//!   expressions;
//! - `nodes.rs`: the containers of linked nodes (`map`/`set`, `unordered_*`, `list`,
//!   `forward_list`);
//! - `wrappers.rs`: `deque`, `vector<bool>`, `array`, `optional`, `variant`, `tuple`, `pair`,
//!   `string_view`, `chrono::duration`.

mod nodes;
mod wrappers;

use crate::frame::Place;
use crate::index::scope::TypeRef;
use crate::index::types::{Type, TypeKind};
use crate::index::ObjectIndex;
use crate::values::Reader;
use periscope_core::value::Value;
use std::sync::Arc;

/// Bounds a vector's element count read from memory (garbage pointers give huge spans).
const MAX_VECTOR_LEN: u64 = 1 << 32;

/// The standard library types shown specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdKind {
    String,
    Vector,
    BitVector,
    Deque,
    List,
    ForwardList,
    /// `map`/`multimap` (`map: true`) or `set`/`multiset`: a red-black tree.
    Tree {
        map: bool,
    },
    /// `unordered_map`/`unordered_multimap` or the sets: a `_Hashtable`.
    Hash {
        map: bool,
    },
    Shared {
        weak: bool,
    },
    Unique,
    Optional,
    Variant,
    Tuple,
    Pair,
    Array,
    StringView,
    Duration,
}

impl StdKind {
    /// The name a user knows it by, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StdKind::String => "std::string",
            StdKind::Vector => "std::vector",
            StdKind::BitVector => "std::vector<bool>",
            StdKind::Deque => "std::deque",
            StdKind::List => "std::list",
            StdKind::ForwardList => "std::forward_list",
            StdKind::Tree { map: true } => "std::map",
            StdKind::Tree { map: false } => "std::set",
            StdKind::Hash { map: true } => "std::unordered_map",
            StdKind::Hash { map: false } => "std::unordered_set",
            StdKind::Shared { weak: false } => "std::shared_ptr",
            StdKind::Shared { weak: true } => "std::weak_ptr",
            StdKind::Unique => "std::unique_ptr",
            StdKind::Optional => "std::optional",
            StdKind::Variant => "std::variant",
            StdKind::Tuple => "std::tuple",
            StdKind::Pair => "std::pair",
            StdKind::Array => "std::array",
            StdKind::StringView => "std::string_view",
            StdKind::Duration => "std::chrono::duration",
        }
    }
}

/// The name before its template arguments: `std::map<int, int>` → `std::map`.
fn head(name: &str) -> &str {
    name.split('<').next().unwrap_or(name)
}

/// Which standard library type `ty` is, if any.
pub(crate) fn classify(index: &ObjectIndex, ty: &Type) -> Option<StdKind> {
    let TypeKind::Struct { members, .. } = &ty.kind else {
        return None;
    };
    let h = head(&ty.name);
    let by_name = match h
        .strip_prefix("std::")
        .map(|n| n.trim_start_matches("__cxx11::"))
    {
        Some("unique_ptr") => Some(StdKind::Unique),
        Some("pair") => Some(StdKind::Pair),
        Some("array") if ty.member("_M_elems").is_some() => Some(StdKind::Array),
        _ => None,
    };
    if by_name.is_some() {
        return by_name;
    }
    if ty.member("_M_dataplus").is_some() && ty.member("_M_string_length").is_some() {
        return Some(StdKind::String);
    }
    if ty.member("__r").is_some() && ty.param("_Period").is_some() {
        return Some(StdKind::Duration);
    }
    if ty.member("_M_len").is_some() && ty.member("_M_str").is_some() && members.len() == 2 {
        return Some(StdKind::StringView);
    }
    let name_of = |t: Option<TypeRef>| t.map(|t| index.type_at(t.unit, t.offset));
    for m in members {
        let Some(mt) = name_of(m.ty) else { continue };
        let mh = head(&mt.name);
        let kind = match (m.name.as_str(), mh) {
            // A typedef names these (`_Rep_type`, `__hashtable`): known by their parameters.
            ("_M_t", _) if mt.param("_Val").is_some() && mt.param("_KeyOfValue").is_some() => {
                StdKind::Tree {
                    map: selects_first(index, &mt, "_KeyOfValue"),
                }
            }
            ("_M_h", _) if mt.param("_Value").is_some() && mt.param("_ExtractKey").is_some() => {
                StdKind::Hash {
                    map: selects_first(index, &mt, "_ExtractKey"),
                }
            }
            ("<base>", "std::_Deque_base") => StdKind::Deque,
            ("<base>", "std::__cxx11::_List_base" | "std::_List_base") => StdKind::List,
            ("<base>", "std::_Fwd_list_base") => StdKind::ForwardList,
            ("<base>", "std::_Bvector_base") => StdKind::BitVector,
            ("<base>", "std::_Vector_base") => StdKind::Vector,
            ("<base>", "std::_Optional_base") => StdKind::Optional,
            ("<base>", "std::__detail::__variant::_Variant_base") => StdKind::Variant,
            ("<base>", "std::_Tuple_impl") => StdKind::Tuple,
            ("<base>", "std::__shared_ptr") => StdKind::Shared { weak: false },
            ("<base>", "std::__weak_ptr") => StdKind::Shared { weak: true },
            _ => continue,
        };
        return Some(kind);
    }
    None
}

/// Whether a tree or hash table's key-of-value function is `_Select1st` (a map) rather than
/// `_Identity` (a set).
fn selects_first(index: &ObjectIndex, table: &Type, param: &str) -> bool {
    table
        .param(param)
        .map(|t| index.type_at(t.unit, t.offset))
        .is_some_and(|t| t.name.contains("_Select1st"))
}

/// Offset and pointee of the pointer a `std::unique_ptr`, `std::shared_ptr` or `std::weak_ptr`
/// holds, or `None` for any other type. The reader and the kernel engine's capture plans both
/// find it here.
pub(crate) fn smart_pointer(index: &ObjectIndex, ty: &Type) -> Option<(u64, Option<TypeRef>)> {
    let member = match classify(index, ty)? {
        StdKind::Unique => "_M_head_impl",
        StdKind::Shared { .. } => "_M_ptr",
        _ => return None,
    };
    pointer_member(index, ty, member, 0, 0)
}

/// Where a shared or weak pointer keeps its counts: the offset of `_M_refcount._M_pi` and,
/// in the `_Sp_counted_base` it points to, the offset of `_M_use_count` (`_M_weak_count` is
/// the 4-byte word after it).
pub(crate) fn ref_counts(index: &ObjectIndex, ty: &Type) -> Option<(u64, u64)> {
    let (pi, target) = pointer_member(index, ty, "_M_pi", 0, 0)?;
    let base = target.map(|t| index.type_at(t.unit, t.offset))?;
    let use_count = base.member("_M_use_count")?;
    let weak = base.member("_M_weak_count")?;
    (weak.offset == use_count.offset + 4).then_some((pi, use_count.offset))
}

/// The first member named `name` of pointer type, depth-first below `ty` (base classes are
/// members too).
fn pointer_member(
    index: &ObjectIndex,
    ty: &Type,
    name: &str,
    base: u64,
    level: u32,
) -> Option<(u64, Option<TypeRef>)> {
    if level > 8 {
        return None;
    }
    let TypeKind::Struct { members, .. } = &ty.kind else {
        return None;
    };
    members.iter().find_map(|m| {
        let mt = m.ty.map(|t| index.type_at(t.unit, t.offset))?;
        match &mt.kind {
            TypeKind::Pointer { target } if m.name == name => Some((base + m.offset, *target)),
            TypeKind::Struct { .. } => pointer_member(index, &mt, name, base + m.offset, level + 1),
            _ => None,
        }
    })
}

/// The alignment of a type, from its parts (DWARF rarely states it): where libstdc++ places
/// a node's value after the node's links.
pub(crate) fn align_of(index: &ObjectIndex, ty: &Type, level: u32) -> u64 {
    let scalar = |size: Option<u64>| size.unwrap_or(1).clamp(1, 16).next_power_of_two();
    match &ty.kind {
        TypeKind::Base(_) | TypeKind::Pointer { .. } | TypeKind::Enum { .. } => scalar(ty.size),
        TypeKind::Array { elem, .. } if level < 16 => {
            align_of(index, &index.type_at(elem.unit, elem.offset), level + 1)
        }
        TypeKind::Struct { members, .. } if level < 16 => members
            .iter()
            .filter_map(|m| m.ty)
            .map(|t| align_of(index, &index.type_at(t.unit, t.offset), level + 1))
            .max()
            .unwrap_or(1),
        _ => 8,
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a.max(1)) * a.max(1)
}

impl Reader<'_> {
    pub(crate) fn render_cpp_special(
        &self,
        place: &Place,
        ty: &Type,
        depth: u32,
        hops: u32,
    ) -> Option<Value> {
        let kind = classify(self.index, ty)?;
        let v = match kind {
            StdKind::Unique | StdKind::Shared { .. } => {
                let (off, target) = smart_pointer(self.index, ty)?;
                self.smart(place, ty, kind, off, target, depth, hops)
            }
            StdKind::String => {
                let (p_off, _) = self.dig(ty, &["_M_dataplus", "_M_p"])?;
                let (l_off, _) = self.dig(ty, &["_M_string_length"])?;
                let ptr = self.read_u64_at(place, p_off).ok()?;
                let len = self.read_u64_at(place, l_off).ok()?;
                self.string_at(ptr, len, Some(ty.name.clone()))
            }
            StdKind::Vector => {
                let (start, len, et) = self.vector_parts(place, ty)?;
                if len > MAX_VECTOR_LEN {
                    return Some(implausible(ty, len));
                }
                self.render_list(&Place::Memory(start), ty.name.clone(), &et, len, depth)
            }
            StdKind::Tree { map } => self.render_tree(place, ty, map, depth)?,
            StdKind::Hash { map } => self.render_hashtable(place, ty, map, depth)?,
            StdKind::List => self.render_linked_list(place, ty, depth)?,
            StdKind::ForwardList => self.render_forward_list(place, ty, depth)?,
            StdKind::Deque => self.render_deque(place, ty, depth)?,
            StdKind::BitVector => self.render_bit_vector(place, ty, depth)?,
            StdKind::Array => {
                let elems = ty.member("_M_elems")?;
                let at = self.ty(elems.ty?);
                let TypeKind::Array { elem, count } = at.kind else {
                    return None;
                };
                let et = self.ty(elem);
                let p = Reader::sub_place(place, elems.offset);
                self.render_list(&p, ty.name.clone(), &et, count.unwrap_or(0), depth)
            }
            StdKind::Optional => self.render_optional(place, ty, depth)?,
            StdKind::Variant => self.render_variant(place, ty, depth)?,
            StdKind::Tuple => self.render_tuple(place, ty, depth)?,
            StdKind::Pair => self.render_pair(place, ty, depth)?,
            StdKind::StringView => {
                let ptr = self.read_u64_at(place, ty.member("_M_str")?.offset).ok()?;
                let len = self.read_u64_at(place, ty.member("_M_len")?.offset).ok()?;
                self.string_at(ptr, len, Some(ty.name.clone()))
            }
            StdKind::Duration => self.render_duration(place, ty)?,
        };
        Some(v)
    }

    /// (data pointer, length, element type) of a `std::vector<T>`.
    fn vector_parts(&self, place: &Place, ty: &Type) -> Option<(u64, u64, Arc<Type>)> {
        let et = self.ty(ty.param("_Tp")?);
        let (s_off, _) = self.find_member(ty, "_M_start", 0, 0)?;
        let (f_off, _) = self.find_member(ty, "_M_finish", 0, 0)?;
        let start = self.read_u64_at(place, s_off).ok()?;
        let finish = self.read_u64_at(place, f_off).ok()?;
        let size = et.size.filter(|s| *s > 0)?;
        Some((start, finish.checked_sub(start)? / size, et))
    }

    /// A smart pointer as the pointer it holds: null, its address, and its target at its own
    /// depth (a smart pointer is no level of its own), as a raw pointer reads; a shared or weak
    /// pointer with its counts, as gdb shows them. An expired weak pointer's target is gone:
    /// its address only.
    #[allow(clippy::too_many_arguments)]
    fn smart(
        &self,
        place: &Place,
        ty: &Type,
        kind: StdKind,
        off: u64,
        target: Option<TypeRef>,
        depth: u32,
        hops: u32,
    ) -> Value {
        let tname = Some(ty.name.clone());
        let addr = match self.read_u64_at(place, off) {
            Ok(a) => a,
            Err(e) => return Value::unavailable(tname, e),
        };
        let counts = match kind {
            StdKind::Shared { .. } => self.counts(place, ty),
            _ => None,
        };
        if addr == 0 && counts.is_none() {
            return Value::null(tname);
        }
        let alive = counts.is_none_or(|(u, _)| u > 0);
        let target = match target.map(|t| self.ty(t)) {
            Some(tt) if addr != 0 && alive && depth > 0 && !matches!(tt.kind, TypeKind::Void) => {
                self.render_pointee(&Place::Memory(addr), &tt, depth, hops)
            }
            _ => None,
        };
        Value::Pointer {
            ty: tname,
            address: format!("{addr:#x}"),
            target: target.map(Box::new),
            use_count: counts.map(|c| c.0),
            weak_count: counts.map(|c| c.1),
        }
    }

    /// (use count, weak count as gdb shows it) of a shared or weak pointer with a control
    /// block; `None` when it has none (empty) or the block cannot be read.
    fn counts(&self, place: &Place, ty: &Type) -> Option<(u64, u64)> {
        let (pi_off, use_off) = ref_counts(self.index, ty)?;
        let pi = self.read_u64_at(place, pi_off).ok().filter(|p| *p != 0)?;
        let b = self.bytes(&Place::Memory(pi), use_off, 8).ok()?;
        let use_count = i32::from_le_bytes([b[0], b[1], b[2], b[3]]).max(0) as u64;
        let weak = i32::from_le_bytes([b[4], b[5], b[6], b[7]]).max(0) as u64;
        // While owners live they hold one weak reference together, which gdb does not count.
        let weak = if use_count > 0 {
            weak.saturating_sub(1)
        } else {
            weak
        };
        Some((use_count, weak))
    }

    /// Offset and type of a member reached by a path of names, each found depth-first below
    /// the previous (base classes included).
    pub(crate) fn dig(&self, ty: &Type, path: &[&str]) -> Option<(u64, Arc<Type>)> {
        let mut off = 0;
        let mut cur = Arc::new(ty.clone());
        for name in path {
            let (o, t) = self.find_member(&cur, name, 0, 0)?;
            off += o;
            cur = self.ty(t);
        }
        Some((off, cur))
    }

    /// The address of a place that must be in memory (containers always are).
    fn address_of(place: &Place) -> Option<u64> {
        match place {
            Place::Memory(a) => Some(*a),
            _ => None,
        }
    }

    /// A container's length from its own fields (no walk), for `len(x)`: `None` when `ty` is
    /// no standard container. A `forward_list` keeps no count: it is counted by a bounded walk.
    pub(crate) fn cpp_len(&self, place: &Place, ty: &Type) -> Option<Result<u64, String>> {
        let kind = classify(self.index, ty)?;
        let field = |path: &[&str]| -> Result<u64, String> {
            let (off, _) = self
                .dig(ty, path)
                .ok_or_else(|| format!("{} without {}", kind.name(), path.join(".")))?;
            self.read_u64_at(place, off)
        };
        Some(match kind {
            StdKind::Vector => self
                .vector_parts(place, ty)
                .map(|p| p.1)
                .ok_or_else(|| "unreadable std::vector".to_string()),
            StdKind::String => field(&["_M_string_length"]),
            StdKind::StringView => field(&["_M_len"]),
            StdKind::Tree { .. } => field(&["_M_node_count"]),
            StdKind::Hash { .. } => field(&["_M_element_count"]),
            StdKind::List => field(&["_M_size"]),
            StdKind::Deque => self.deque_len(place, ty).map(|d| d.0),
            StdKind::BitVector => self.bit_vector_len(place, ty).map(|b| b.0),
            StdKind::Array => match ty.member("_M_elems").and_then(|m| m.ty).map(|t| self.ty(t)) {
                Some(t) => match t.kind {
                    TypeKind::Array { count, .. } => Ok(count.unwrap_or(0)),
                    _ => Err("std::array without elements".into()),
                },
                None => Err("std::array without elements".into()),
            },
            StdKind::ForwardList => self.forward_list_count(place, ty),
            _ => return None,
        })
    }

    /// Element `i` of a `vector`, `deque` or `array` as a typed place, for `v[i]`: `None` when
    /// `ty` is none of these.
    pub(crate) fn cpp_element(
        &self,
        place: &Place,
        ty: &Type,
        i: i128,
    ) -> Option<Result<(Place, Arc<Type>), String>> {
        let kind = classify(self.index, ty)?;
        if !matches!(kind, StdKind::Vector | StdKind::Deque | StdKind::Array) {
            return None;
        }
        let len = match self.cpp_len(place, ty)? {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        if i < 0 || i as u64 >= len {
            return Some(Err(format!("index {i} out of range for len {len}")));
        }
        let i = i as u64;
        Some(match kind {
            StdKind::Vector => self
                .vector_parts(place, ty)
                .map(|(start, _, et)| {
                    let stride = et.size.unwrap_or(0);
                    (Place::Memory(start + i * stride), et)
                })
                .ok_or_else(|| "unreadable std::vector".into()),
            StdKind::Deque => self.deque_element(place, ty, i),
            _ => {
                let elems = ty.member("_M_elems");
                let et = elems
                    .and_then(|m| m.ty)
                    .map(|t| self.ty(t))
                    .and_then(|t| match t.kind {
                        TypeKind::Array { elem, .. } => Some(self.ty(elem)),
                        _ => None,
                    });
                match (elems, et) {
                    (Some(m), Some(et)) => Ok((
                        Reader::sub_place(place, m.offset + i * et.size.unwrap_or(0)),
                        et,
                    )),
                    _ => Err("std::array without elements".into()),
                }
            }
        })
    }

    /// What `*x` reads for a smart pointer (the object it holds) or an `optional` (the value
    /// it contains): `None` when `ty` is neither.
    pub(crate) fn cpp_deref(
        &self,
        place: &Place,
        ty: &Type,
        text: &str,
    ) -> Option<Result<(Place, Arc<Type>), String>> {
        match classify(self.index, ty)? {
            StdKind::Unique | StdKind::Shared { .. } => {
                let (off, target) = smart_pointer(self.index, ty)?;
                let pointee = target.map(|t| self.ty(t));
                Some(match (self.read_u64_at(place, off), pointee) {
                    (Ok(0), _) => Err(format!("`{text}` is empty (it holds a null pointer)")),
                    (Ok(a), Some(t)) => Ok((Place::Memory(a), t)),
                    (Ok(_), None) => Err(format!("`{text}` points to void")),
                    (Err(e), _) => Err(e),
                })
            }
            StdKind::Optional => Some(match self.optional_payload(place, ty) {
                Ok(Some(p)) => Ok(p),
                Ok(None) => Err(format!(
                    "`{text}` is empty (std::nullopt): guard it with `{text}.has_value() && …`"
                )),
                Err(e) => Err(e),
            }),
            _ => None,
        }
    }
}

impl Reader<'_> {
    /// What an operator computes with for an `optional`: the value it holds.
    pub(crate) fn cpp_scalar_place(
        &self,
        place: &Place,
        ty: &Type,
    ) -> Option<Result<(Place, Arc<Type>), String>> {
        match classify(self.index, ty)? {
            StdKind::Optional => self.cpp_deref(place, ty, "the optional"),
            _ => None,
        }
    }

    /// A `chrono::duration` as its count, for computing with (`d > 200` in its own unit).
    pub(crate) fn cpp_number(&self, place: &Place, ty: &Type) -> Option<Value> {
        match classify(self.index, ty)? {
            StdKind::Duration => self.duration_count(place, ty),
            _ => None,
        }
    }
}

fn implausible(ty: &Type, len: u64) -> Value {
    Value::unavailable(Some(ty.name.clone()), format!("implausible length {len}"))
}
