//! The type model: DWARF type DIEs reduced to what the value reader needs.
//! Typedefs, `const` and `volatile` are resolved away (a typedef keeps its name).

use super::scope::TypeRef;
use super::{attr_str, Lang, ObjectIndex};

#[derive(Debug, Clone)]
pub struct Type {
    /// Qualified where the language has namespaces: `alloc::string::String`, `struct job`.
    pub name: String,
    pub size: Option<u64>,
    pub kind: TypeKind,
    pub lang: Lang,
}

#[derive(Debug, Clone)]
pub enum TypeKind {
    Base(gimli::DwAte),
    Pointer {
        target: Option<TypeRef>,
    },
    Struct {
        members: Vec<Member>,
        union: bool,
        variants: Option<VariantPart>,
        /// Rust generics and C++ templates: `T` of `Vec<T>`.
        params: Vec<(String, TypeRef)>,
    },
    Array {
        elem: TypeRef,
        count: Option<u64>,
    },
    Enum {
        enumerators: Vec<(String, i128)>,
        signed: bool,
    },
    Function,
    Void,
    /// A DWARF tag the reader does not know, or a broken reference.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub offset: u64,
    pub ty: Option<TypeRef>,
    /// (bit offset from `offset`, bit size) for bitfields.
    pub bits: Option<(u64, u64)>,
    pub artificial: bool,
    /// Its fields read as the enclosing struct's own: a Go embedded field, a C++ base.
    pub embedded: bool,
}

/// A Rust enum's variants (DWARF `variant_part`): the discriminant member and each variant's
/// value. A variant without a value is the default (the niche-optimized one).
#[derive(Debug, Clone)]
pub struct VariantPart {
    pub discr: Option<Member>,
    pub variants: Vec<Variant>,
}

#[derive(Debug, Clone)]
pub struct Variant {
    pub discr_value: Option<u64>,
    pub member: Member,
}

impl Type {
    pub fn member(&self, name: &str) -> Option<&Member> {
        match &self.kind {
            TypeKind::Struct { members, .. } => members.iter().find(|m| m.name == name),
            _ => None,
        }
    }

    pub fn param(&self, name: &str) -> Option<TypeRef> {
        match &self.kind {
            TypeKind::Struct { params, .. } => {
                params.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
            }
            _ => None,
        }
    }

    pub fn is_integer_like(&self) -> bool {
        matches!(self.kind, TypeKind::Base(e) if e != gimli::DW_ATE_float)
            || matches!(self.kind, TypeKind::Enum { .. })
    }

    fn unknown(lang: Lang) -> Type {
        Type {
            name: "?".into(),
            size: None,
            kind: TypeKind::Unknown,
            lang,
        }
    }
}

fn udata(v: Option<gimli::AttributeValue<super::R>>) -> Option<u64> {
    match v? {
        gimli::AttributeValue::Udata(n) => Some(n),
        gimli::AttributeValue::Data1(n) => Some(n.into()),
        gimli::AttributeValue::Data2(n) => Some(n.into()),
        gimli::AttributeValue::Data4(n) => Some(n.into()),
        gimli::AttributeValue::Data8(n) => Some(n),
        gimli::AttributeValue::Sdata(n) if n >= 0 => Some(n as u64),
        _ => None,
    }
}

fn sdata(v: Option<gimli::AttributeValue<super::R>>) -> Option<i128> {
    match v? {
        gimli::AttributeValue::Sdata(n) => Some(n.into()),
        gimli::AttributeValue::Udata(n) => Some(n.into()),
        gimli::AttributeValue::Data1(n) => Some(n.into()),
        gimli::AttributeValue::Data2(n) => Some(n.into()),
        gimli::AttributeValue::Data4(n) => Some(n.into()),
        gimli::AttributeValue::Data8(n) => Some(n.into()),
        _ => None,
    }
}

/// Parses the type DIE at `offset`; never fails: a broken DIE becomes `TypeKind::Unknown`.
pub(super) fn parse(index: &ObjectIndex, unit_idx: u32, offset: gimli::UnitOffset) -> Type {
    parse_depth(index, unit_idx, offset, 0)
}

fn parse_depth(index: &ObjectIndex, unit_idx: u32, offset: gimli::UnitOffset, depth: u32) -> Type {
    let lang = index.unit_lang(unit_idx);
    let Some(ud) = index.units.get(unit_idx as usize) else {
        return Type::unknown(lang);
    };
    let unit = &ud.unit;
    let dwarf = &index.dwarf;
    let Ok(entry) = unit.entry(offset) else {
        return Type::unknown(lang);
    };
    let name = entry
        .attr_value(gimli::DW_AT_name)
        .and_then(|v| attr_str(dwarf, unit, v));
    let size = udata(entry.attr_value(gimli::DW_AT_byte_size));
    let target = index.type_ref(unit_idx, entry.attr_value(gimli::DW_AT_type));
    let qualified = |n: &str| -> String {
        let prefix = index
            .scopes(unit_idx)
            .ok()
            .and_then(|s| s.type_prefix.get(&offset).cloned());
        match prefix {
            Some(p) if lang != Lang::C => format!("{p}::{n}"),
            _ => n.to_string(),
        }
    };
    let c_tag = |kw: &str, n: Option<&String>| match (lang, n) {
        (Lang::C, Some(n)) => format!("{kw} {n}"),
        (_, Some(n)) => qualified(n),
        (_, None) => format!("<anonymous {kw}>"),
    };
    // Chains of typedefs and qualifiers are short; the depth bound guards against cycles.
    if depth > 16 {
        return Type::unknown(lang);
    }
    match entry.tag() {
        gimli::DW_TAG_base_type => {
            let enc = match entry.attr_value(gimli::DW_AT_encoding) {
                Some(gimli::AttributeValue::Encoding(e)) => e,
                _ => gimli::DW_ATE_signed,
            };
            Type {
                name: name.unwrap_or_else(|| "?".into()),
                size,
                kind: if size == Some(0) {
                    TypeKind::Void
                } else {
                    TypeKind::Base(enc)
                },
                lang,
            }
        }
        gimli::DW_TAG_pointer_type
        | gimli::DW_TAG_reference_type
        | gimli::DW_TAG_rvalue_reference_type => {
            let tname = match &name {
                Some(n) => n.clone(),
                None => {
                    let inner = target
                        .map(|t| index.type_at(t.unit, t.offset).name.clone())
                        .unwrap_or_else(|| "void".into());
                    match (entry.tag(), lang) {
                        (gimli::DW_TAG_pointer_type, Lang::Rust) => format!("*const {inner}"),
                        (gimli::DW_TAG_pointer_type, _) => format!("{inner} *"),
                        (gimli::DW_TAG_reference_type, _) => format!("{inner} &"),
                        _ => format!("{inner} &&"),
                    }
                }
            };
            Type {
                name: tname,
                size: size.or(Some(8)),
                kind: TypeKind::Pointer { target },
                lang,
            }
        }
        gimli::DW_TAG_typedef
        | gimli::DW_TAG_const_type
        | gimli::DW_TAG_volatile_type
        | gimli::DW_TAG_restrict_type
        | gimli::DW_TAG_atomic_type => match target {
            Some(t) => {
                let mut inner = parse_depth(index, t.unit, t.offset, depth + 1);
                if entry.tag() == gimli::DW_TAG_typedef {
                    if let Some(n) = name {
                        inner.name = qualified(&n);
                    }
                }
                inner
            }
            None => Type {
                name: name.unwrap_or_else(|| "void".into()),
                size: Some(0),
                kind: TypeKind::Void,
                lang,
            },
        },
        gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type | gimli::DW_TAG_union_type => {
            let union = entry.tag() == gimli::DW_TAG_union_type;
            let kw = if union { "union" } else { "struct" };
            let (members, variants, params) = children_of_struct(index, unit_idx, offset);
            Type {
                name: c_tag(kw, name.as_ref()),
                size,
                kind: TypeKind::Struct {
                    members,
                    union,
                    variants,
                    params,
                },
                lang,
            }
        }
        gimli::DW_TAG_array_type => {
            let count = array_count(index, unit_idx, offset);
            let Some(elem) = target else {
                return Type::unknown(lang);
            };
            let elem_name = index.type_at(elem.unit, elem.offset).name.clone();
            let n = count.map(|c| c.to_string()).unwrap_or_default();
            Type {
                name: match lang {
                    Lang::Rust => format!("[{elem_name}; {n}]"),
                    _ => format!("{elem_name}[{n}]"),
                },
                size,
                kind: TypeKind::Array { elem, count },
                lang,
            }
        }
        gimli::DW_TAG_enumeration_type => {
            let signed = target
                .map(|t| {
                    matches!(index.type_at(t.unit, t.offset).kind, TypeKind::Base(e) if e == gimli::DW_ATE_signed)
                })
                .unwrap_or(true);
            Type {
                name: c_tag("enum", name.as_ref()),
                size,
                kind: TypeKind::Enum {
                    enumerators: enumerators(index, unit_idx, offset),
                    signed,
                },
                lang,
            }
        }
        gimli::DW_TAG_subroutine_type => Type {
            name: name.unwrap_or_else(|| "fn".into()),
            size,
            kind: TypeKind::Function,
            lang,
        },
        gimli::DW_TAG_unspecified_type => Type {
            name: name.unwrap_or_else(|| "void".into()),
            size: Some(0),
            kind: TypeKind::Void,
            lang,
        },
        _ => Type {
            name: name.unwrap_or_else(|| "?".into()),
            size,
            kind: TypeKind::Unknown,
            lang,
        },
    }
}

fn member_of(
    index: &ObjectIndex,
    unit_idx: u32,
    entry: &gimli::DebuggingInformationEntry<super::R>,
) -> Option<Member> {
    let unit = &index.units.get(unit_idx as usize)?.unit;
    let name = entry
        .attr_value(gimli::DW_AT_name)
        .and_then(|v| attr_str(&index.dwarf, unit, v))
        .unwrap_or_default();
    let mut offset = match entry.attr_value(gimli::DW_AT_data_member_location) {
        Some(gimli::AttributeValue::Exprloc(expr)) => {
            // Old compilers write `DW_OP_plus_uconst N`.
            let mut ops = expr.operations(unit.encoding());
            match ops.next() {
                Ok(Some(gimli::Operation::PlusConstant { value })) => value,
                _ => 0,
            }
        }
        v => udata(v).unwrap_or(0),
    };
    let bit_size = udata(entry.attr_value(gimli::DW_AT_bit_size));
    let bits = match bit_size {
        Some(bs) => {
            if let Some(dbo) = udata(entry.attr_value(gimli::DW_AT_data_bit_offset)) {
                offset = dbo / 8;
                Some((dbo % 8, bs))
            } else if let Some(bo) = udata(entry.attr_value(gimli::DW_AT_bit_offset)) {
                // DWARF 2 counts from the most significant bit of the storage unit.
                let storage = udata(entry.attr_value(gimli::DW_AT_byte_size)).unwrap_or(4) * 8;
                Some((storage.saturating_sub(bo + bs), bs))
            } else {
                Some((0, bs))
            }
        }
        None => None,
    };
    Some(Member {
        name,
        offset,
        ty: index.type_ref(unit_idx, entry.attr_value(gimli::DW_AT_type)),
        bits,
        artificial: entry.attr_value(gimli::DW_AT_artificial).is_some(),
        // DW_AT_go_embedded_field
        embedded: matches!(
            entry.attr_value(gimli::DwAt(0x2903)),
            Some(gimli::AttributeValue::Flag(true))
        ),
    })
}

type StructChildren = (Vec<Member>, Option<VariantPart>, Vec<(String, TypeRef)>);

fn children_of_struct(
    index: &ObjectIndex,
    unit_idx: u32,
    offset: gimli::UnitOffset,
) -> StructChildren {
    let mut members = Vec::new();
    let mut params = Vec::new();
    let mut variants = None;
    let Some(ud) = index.units.get(unit_idx as usize) else {
        return (members, variants, params);
    };
    let unit = &ud.unit;
    let Ok(mut tree) = unit.entries_tree(Some(offset)) else {
        return (members, variants, params);
    };
    let Ok(root) = tree.root() else {
        return (members, variants, params);
    };
    let mut children = root.children();
    while let Ok(Some(child)) = children.next() {
        let e = child.entry().clone();
        match e.tag() {
            gimli::DW_TAG_member => {
                if e.attr_value(gimli::DW_AT_external).is_some()
                    || e.attr_value(gimli::DW_AT_declaration).is_some()
                {
                    continue; // static members live elsewhere
                }
                if let Some(m) = member_of(index, unit_idx, &e) {
                    members.push(m);
                }
            }
            gimli::DW_TAG_inheritance => {
                if let Some(mut m) = member_of(index, unit_idx, &e) {
                    m.name = "<base>".into();
                    m.embedded = true;
                    members.push(m);
                }
            }
            gimli::DW_TAG_template_type_parameter => {
                let n = e
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| attr_str(&index.dwarf, unit, v));
                if let (Some(n), Some(t)) =
                    (n, index.type_ref(unit_idx, e.attr_value(gimli::DW_AT_type)))
                {
                    params.push((n, t));
                }
            }
            gimli::DW_TAG_variant_part => {
                let discr = match e.attr_value(gimli::DW_AT_discr) {
                    Some(gimli::AttributeValue::UnitRef(d)) => unit
                        .entry(d)
                        .ok()
                        .and_then(|de| member_of(index, unit_idx, &de)),
                    _ => None,
                };
                let mut vs = Vec::new();
                let mut vchildren = child.children();
                while let Ok(Some(v)) = vchildren.next() {
                    let ve = v.entry().clone();
                    if ve.tag() != gimli::DW_TAG_variant {
                        continue;
                    }
                    let discr_value =
                        sdata(ve.attr_value(gimli::DW_AT_discr_value)).map(|x| x as u64);
                    let mut inner = v.children();
                    while let Ok(Some(m)) = inner.next() {
                        if m.entry().tag() == gimli::DW_TAG_member {
                            if let Some(member) = member_of(index, unit_idx, m.entry()) {
                                vs.push(Variant {
                                    discr_value,
                                    member,
                                });
                            }
                        }
                    }
                }
                variants = Some(VariantPart {
                    discr,
                    variants: vs,
                });
            }
            _ => {}
        }
    }
    (members, variants, params)
}

fn array_count(index: &ObjectIndex, unit_idx: u32, offset: gimli::UnitOffset) -> Option<u64> {
    let unit = &index.units.get(unit_idx as usize)?.unit;
    let mut tree = unit.entries_tree(Some(offset)).ok()?;
    let root = tree.root().ok()?;
    let mut children = root.children();
    while let Ok(Some(child)) = children.next() {
        let e = child.entry();
        if e.tag() == gimli::DW_TAG_subrange_type {
            if let Some(c) = udata(e.attr_value(gimli::DW_AT_count)) {
                return Some(c);
            }
            let lower = udata(e.attr_value(gimli::DW_AT_lower_bound)).unwrap_or(0);
            return udata(e.attr_value(gimli::DW_AT_upper_bound)).map(|u| u + 1 - lower.min(u + 1));
        }
    }
    None
}

fn enumerators(
    index: &ObjectIndex,
    unit_idx: u32,
    offset: gimli::UnitOffset,
) -> Vec<(String, i128)> {
    let mut out = Vec::new();
    let Some(ud) = index.units.get(unit_idx as usize) else {
        return out;
    };
    let unit = &ud.unit;
    let Ok(mut tree) = unit.entries_tree(Some(offset)) else {
        return out;
    };
    let Ok(root) = tree.root() else { return out };
    let mut children = root.children();
    while let Ok(Some(child)) = children.next() {
        let e = child.entry();
        if e.tag() == gimli::DW_TAG_enumerator {
            let n = e
                .attr_value(gimli::DW_AT_name)
                .and_then(|v| attr_str(&index.dwarf, unit, v));
            if let (Some(n), Some(v)) = (n, sdata(e.attr_value(gimli::DW_AT_const_value))) {
                out.push((n, v));
            }
        }
    }
    out
}
