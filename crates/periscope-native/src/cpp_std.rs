//! C++ standard library types as users think of them (libstdc++, the GNU/Linux default):
//! `std::string` as a string, `std::vector<T>` as a list, `std::unique_ptr<T>` and
//! `std::shared_ptr<T>` as the pointers they hold. Members are found by name:
//! `basic_string { _M_dataplus { _M_p }, _M_string_length }`, `vector`'s `_Vector_impl_data
//! { _M_start, _M_finish }` under its base classes, with `T` the `_Tp` template parameter;
//! `unique_ptr`'s `T *` is the `_M_head_impl` of pointer type in the tuple under `_M_t`
//! (the deleter's own `_M_head_impl` is no pointer), `shared_ptr`'s is `__shared_ptr::_M_ptr`.

use crate::frame::Place;
use crate::index::scope::TypeRef;
use crate::index::types::{Type, TypeKind};
use crate::index::ObjectIndex;
use crate::values::Reader;
use periscope_core::value::Value;

/// Bounds a vector's element count read from memory (garbage pointers give huge spans).
const MAX_VECTOR_LEN: u64 = 1 << 32;

/// Offset and pointee of the pointer a `std::unique_ptr` or `std::shared_ptr` holds, or `None`
/// for any other type. The reader and the kernel engine's capture plans both find it here.
pub(crate) fn smart_pointer(index: &ObjectIndex, ty: &Type) -> Option<(u64, Option<TypeRef>)> {
    if !matches!(ty.kind, TypeKind::Struct { .. }) {
        return None;
    }
    let head = ty.name.split('<').next().unwrap_or(&ty.name);
    let member = if head.ends_with("::unique_ptr") {
        "_M_head_impl"
    } else if head.ends_with("::shared_ptr") {
        "_M_ptr"
    } else {
        return None;
    };
    pointer_member(index, ty, member, 0, 0)
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

impl Reader<'_> {
    pub(crate) fn render_cpp_special(
        &self,
        place: &Place,
        ty: &Type,
        depth: u32,
        hops: u32,
    ) -> Option<Value> {
        if !matches!(ty.kind, TypeKind::Struct { .. }) {
            return None;
        }
        if let Some((off, target)) = smart_pointer(self.index, ty) {
            return Some(self.smart(place, ty, off, target, depth, hops));
        }
        let head = ty.name.split('<').next().unwrap_or(&ty.name);
        // By shape too: a typedef renames it (`shared_ptr<string>::element_type`).
        let string_shaped =
            ty.member("_M_dataplus").is_some() && ty.member("_M_string_length").is_some();
        if head.ends_with("basic_string") || head.ends_with("::string") || string_shaped {
            let (p_off, _) = self.member_path(ty, &["_M_dataplus", "_M_p"])?;
            let (l_off, _) = self.member_path(ty, &["_M_string_length"])?;
            let ptr = self.read_u64_at(place, p_off).ok()?;
            let len = self.read_u64_at(place, l_off).ok()?;
            return Some(self.string_at(ptr, len, Some(ty.name.clone())));
        }
        if head.ends_with("::vector") {
            let et = self.ty(ty.param("_Tp")?);
            let (s_off, _) = self.find_member(ty, "_M_start", 0, 0)?;
            let (f_off, _) = self.find_member(ty, "_M_finish", 0, 0)?;
            let start = self.read_u64_at(place, s_off).ok()?;
            let finish = self.read_u64_at(place, f_off).ok()?;
            let size = et.size.filter(|s| *s > 0)?;
            let len = finish.checked_sub(start)? / size;
            if len > MAX_VECTOR_LEN {
                return Some(Value::unavailable(
                    Some(ty.name.clone()),
                    format!("implausible length {len}"),
                ));
            }
            return Some(self.render_list(&Place::Memory(start), ty.name.clone(), &et, len, depth));
        }
        None
    }

    /// A smart pointer as the pointer it holds: null, its address, and its target at its own
    /// depth (a smart pointer is no level of its own), as a raw pointer reads.
    fn smart(
        &self,
        place: &Place,
        ty: &Type,
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
        if addr == 0 {
            return Value::null(tname);
        }
        let target = match target.map(|t| self.ty(t)) {
            Some(tt) if depth > 0 && !matches!(tt.kind, TypeKind::Void) => {
                self.render_pointee(&Place::Memory(addr), &tt, depth, hops)
            }
            _ => None,
        };
        Value::Pointer {
            ty: tname,
            address: format!("{addr:#x}"),
            target: target.map(Box::new),
        }
    }

    /// Offset and type of a member reached by a path of names from `ty`.
    fn member_path(
        &self,
        ty: &Type,
        path: &[&str],
    ) -> Option<(u64, Option<crate::index::scope::TypeRef>)> {
        let mut off = 0;
        let mut cur = std::sync::Arc::new(ty.clone());
        let mut last = None;
        for name in path {
            let m = cur.member(name)?;
            off += m.offset;
            last = m.ty;
            if let Some(t) = m.ty {
                cur = self.ty(t);
            }
        }
        Some((off, last))
    }
}
