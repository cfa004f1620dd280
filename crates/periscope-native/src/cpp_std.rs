//! C++ standard library types as users think of them (libstdc++, the GNU/Linux default):
//! `std::string` as a string and `std::vector<T>` as a list. Members are found by name:
//! `basic_string { _M_dataplus { _M_p }, _M_string_length }`, and `vector`'s `_Vector_impl_data
//! { _M_start, _M_finish }` under its base classes, with `T` the `_Tp` template parameter.

use crate::frame::Place;
use crate::index::types::{Type, TypeKind};
use crate::values::Reader;
use periscope_core::value::Value;

/// Bounds a vector's element count read from memory (garbage pointers give huge spans).
const MAX_VECTOR_LEN: u64 = 1 << 32;

impl Reader<'_> {
    pub(crate) fn render_cpp_special(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        if !matches!(ty.kind, TypeKind::Struct { .. }) {
            return None;
        }
        let head = ty.name.split('<').next().unwrap_or(&ty.name);
        if head.ends_with("basic_string") || head.ends_with("::string") {
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
