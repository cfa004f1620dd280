//! Reading target bytes as typed [`Value`]s, the way the source language shows them.
//!
//! Rust's std types are recognised by name and their fields found by name, never by position
//! (layouts drift between rustc versions: `Vec`'s `cap` sits before `ptr` today). Every length
//! read from the target is capped before use: an uninitialised local can hold any garbage.

use crate::frame::Place;
use crate::index::scope::TypeRef;
use crate::index::types::{Type, TypeKind, VariantPart};
use crate::index::{Lang, ObjectIndex};
use crate::process::Memory;
use periscope_core::redact::Redactor;
use periscope_core::value::{Fields, Int128, Value, UNSUPPORTED};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

/// Pointers followed in a row without passing through a struct or collection (`T **`, Go's
/// `type P *P`): such chains consume no depth, so this bounds them instead.
pub const MAX_POINTER_CHAIN: u32 = 8;

/// Capture limits: the seam's type, which every runtime honours.
pub use periscope_runtime::probe::Limits;

pub struct Reader<'a> {
    pub index: &'a ObjectIndex,
    pub mem: &'a Memory,
    pub limits: Limits,
    /// Bytes left to read for this capture, shared by the readers of one snapshot's frames.
    budget: Rc<Cell<usize>>,
    pub redactor: &'a Redactor,
    /// Names code addresses (function pointers), when the reader knows the whole process.
    pub target: Option<&'a crate::target::Target>,
}

impl<'a> Reader<'a> {
    pub fn new(
        index: &'a ObjectIndex,
        mem: &'a Memory,
        limits: Limits,
        redactor: &'a Redactor,
    ) -> Self {
        Reader {
            index,
            mem,
            limits,
            budget: Rc::new(Cell::new(limits.total_bytes)),
            redactor,
            target: None,
        }
    }

    /// Lets the reader name function pointers anywhere in the process.
    pub fn with_target(mut self, target: &'a crate::target::Target) -> Self {
        self.target = Some(target);
        self
    }

    /// A reader for another object of the same capture, drawing on the same byte budget.
    pub fn sharing(&self, index: &'a ObjectIndex) -> Reader<'a> {
        Reader {
            index,
            mem: self.mem,
            limits: self.limits,
            budget: self.budget.clone(),
            redactor: self.redactor,
            target: self.target,
        }
    }

    pub fn ty(&self, r: TypeRef) -> Arc<Type> {
        self.index.type_at(r.unit, r.offset)
    }

    /// Reads `len` bytes of a place, charging the capture budget.
    pub fn bytes(&self, place: &Place, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        match place {
            Place::Memory(addr) => {
                let left = self.budget.get();
                if len > left {
                    return Err("capture size limit reached".into());
                }
                self.budget.set(left - len);
                let mut buf = vec![0u8; len];
                self.mem
                    .read(addr.wrapping_add(offset), &mut buf)
                    .map_err(|e| e.to_string())?;
                Ok(buf)
            }
            Place::Bytes(b) => {
                let start = offset as usize;
                b.get(start..start + len)
                    .map(|s| s.to_vec())
                    .ok_or_else(|| "value is smaller than its type".to_string())
            }
            Place::Unavailable(r) => Err(r.clone()),
            Place::Implicit(_) => Err(crate::frame::IMPLICIT_POINTER.into()),
        }
    }

    pub fn sub_place(place: &Place, offset: u64) -> Place {
        match place {
            Place::Memory(a) => Place::Memory(a.wrapping_add(offset)),
            Place::Bytes(b) => Place::Bytes(
                b.get(offset as usize..)
                    .map(|s| s.to_vec())
                    .unwrap_or_default(),
            ),
            Place::Unavailable(r) => Place::Unavailable(r.clone()),
            Place::Implicit(_) => Place::Unavailable(crate::frame::IMPLICIT_POINTER.into()),
        }
    }

    pub fn read_u64_at(&self, place: &Place, offset: u64) -> Result<u64, String> {
        let b = self.bytes(place, offset, 8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| "short read")?))
    }

    /// Renders the value of type `ty` at `place`, with `depth` levels of structure left below it.
    pub fn render(&self, place: &Place, ty: &Type, depth: u32) -> Value {
        self.render_hop(place, ty, depth, 0)
    }

    /// What a pointer points at: at the pointer's own depth (a pointer is not a level), unless
    /// `hops` pointers in a row were followed already.
    pub(crate) fn render_pointee(
        &self,
        place: &Place,
        ty: &Type,
        depth: u32,
        hops: u32,
    ) -> Option<Value> {
        (hops < MAX_POINTER_CHAIN).then(|| self.render_hop(place, ty, depth, hops + 1))
    }

    /// [`Reader::render`] as the `hops`-th pointer in a row leads to it; structs and
    /// collections render their parts with the chain reset (they consume depth instead).
    fn render_hop(&self, place: &Place, ty: &Type, depth: u32, hops: u32) -> Value {
        let tname = Some(ty.name.clone());
        if let Place::Unavailable(reason) = place {
            return Value::unavailable(tname, reason.clone());
        }
        if ty.lang == Lang::Rust {
            if let Some(v) = self.render_rust_special(place, ty, depth, hops) {
                return v;
            }
        }
        if ty.lang == Lang::Cpp {
            if let Some(v) = self.render_cpp_special(place, ty, depth, hops) {
                return v;
            }
        }
        if ty.lang == Lang::Go {
            if let Some(v) = self.render_go_special(place, ty, depth) {
                return v;
            }
        }
        match &ty.kind {
            TypeKind::Base(enc) => self.render_base(place, ty, *enc),
            TypeKind::Enum {
                enumerators,
                signed,
            } => {
                let size = ty.size.unwrap_or(4) as usize;
                match self.bytes(place, 0, size) {
                    Ok(b) => {
                        let v = int_from(&b, *signed);
                        match enumerators.iter().find(|(_, x)| *x == v) {
                            Some((n, _)) => Value::Enum {
                                ty: tname,
                                variant: n.clone(),
                                fields: Fields::default(),
                            },
                            None => Value::Int {
                                ty: tname,
                                value: Int128::Signed(v),
                            },
                        }
                    }
                    Err(e) => Value::unavailable(tname, e),
                }
            }
            TypeKind::Pointer { target } => self.render_pointer(place, ty, *target, depth, hops),
            TypeKind::Array { elem, count } => self.render_array(place, ty, *elem, *count, depth),
            TypeKind::Struct {
                variants: Some(vp), ..
            } => self.render_variants(place, ty, vp, depth),
            TypeKind::Struct { members, .. } => {
                if ty.name == "()" {
                    return Value::Unit { ty: tname };
                }
                if depth == 0 {
                    return Value::Struct {
                        ty: tname,
                        fields: Fields::default(),
                        truncated: true,
                    };
                }
                let mut fields = Vec::new();
                let mut truncated = false;
                for m in members {
                    if fields.len() >= self.limits.fields {
                        truncated = true;
                        break;
                    }
                    let v = match m.ty {
                        _ if self.redactor.is_sensitive(&m.name) => Value::Redacted {
                            ty: m.ty.map(|t| self.ty(t).name.clone()),
                        },
                        Some(t) => {
                            let mt = self.ty(t);
                            match m.bits {
                                Some((bit, size)) => {
                                    self.render_bitfield(place, m.offset, bit, size, &mt)
                                }
                                None => {
                                    self.render(&Self::sub_place(place, m.offset), &mt, depth - 1)
                                }
                            }
                        }
                        None => Value::unavailable(None, UNSUPPORTED),
                    };
                    let name = m
                        .name
                        .strip_prefix("__")
                        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
                        .unwrap_or(&m.name);
                    fields.push((name.to_string(), v));
                }
                Value::Struct {
                    ty: tname,
                    fields: Fields(fields),
                    truncated,
                }
            }
            TypeKind::Function => Value::Function {
                ty: tname,
                symbol: "?".into(),
            },
            TypeKind::Void => Value::Unit { ty: tname },
            TypeKind::Unknown => Value::unavailable(tname, UNSUPPORTED),
        }
    }

    /// A number as a number, whatever its type's name (`time.Duration` is computed with as
    /// nanoseconds, though shown as `1.5s`).
    pub fn render_number(&self, place: &Place, ty: &Type) -> Option<Value> {
        match ty.kind {
            TypeKind::Base(enc) => Some(self.render_base(place, ty, enc)),
            _ => None,
        }
    }

    fn render_base(&self, place: &Place, ty: &Type, enc: gimli::DwAte) -> Value {
        let tname = Some(ty.name.clone());
        let size = ty.size.unwrap_or(0) as usize;
        if size == 0 || size > 16 {
            return Value::unavailable(tname, UNSUPPORTED);
        }
        let b = match self.bytes(place, 0, size) {
            Ok(b) => b,
            Err(e) => return Value::unavailable(tname, e),
        };
        match enc {
            gimli::DW_ATE_boolean => Value::Bool {
                ty: tname,
                value: b.iter().any(|x| *x != 0),
            },
            gimli::DW_ATE_float => match size {
                4 => Value::Float {
                    ty: tname,
                    value: f32::from_le_bytes([b[0], b[1], b[2], b[3]]).into(),
                },
                8 => Value::Float {
                    ty: tname,
                    value: f64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])),
                },
                _ => Value::unavailable(tname, UNSUPPORTED),
            },
            gimli::DW_ATE_UTF => {
                let code = int_from(&b, false) as u32;
                match char::from_u32(code) {
                    Some(c) => Value::Char {
                        ty: tname,
                        value: c.to_string(),
                    },
                    None => Value::Int {
                        ty: tname,
                        value: Int128::Signed(code.into()),
                    },
                }
            }
            gimli::DW_ATE_signed_char | gimli::DW_ATE_unsigned_char if size == 1 => {
                // C's char: show the character when printable, the number otherwise.
                let c = b[0];
                if c.is_ascii_graphic() || c == b' ' {
                    Value::Char {
                        ty: tname,
                        value: (c as char).to_string(),
                    }
                } else {
                    Value::Int {
                        ty: tname,
                        value: Int128::Signed(if enc == gimli::DW_ATE_signed_char {
                            (c as i8).into()
                        } else {
                            c.into()
                        }),
                    }
                }
            }
            gimli::DW_ATE_signed | gimli::DW_ATE_signed_char => Value::Int {
                ty: tname,
                value: Int128::Signed(int_from(&b, true)),
            },
            gimli::DW_ATE_unsigned | gimli::DW_ATE_unsigned_char => Value::Int {
                ty: tname,
                value: uint_from(&b),
            },
            _ => Value::unavailable(tname, UNSUPPORTED),
        }
    }

    fn render_bitfield(&self, place: &Place, offset: u64, bit: u64, size: u64, ty: &Type) -> Value {
        let nbytes = (bit + size).div_ceil(8) as usize;
        let b = match self.bytes(place, offset, nbytes.min(16)) {
            Ok(b) => b,
            Err(e) => return Value::unavailable(Some(ty.name.clone()), e),
        };
        let raw = int_from(&b, false) as u128;
        let mut v = (raw >> bit) & ((1u128 << size) - 1);
        let signed = matches!(ty.kind, TypeKind::Base(e) if e == gimli::DW_ATE_signed);
        if signed && size > 0 && v & (1 << (size - 1)) != 0 {
            v |= !((1u128 << size) - 1);
        }
        Value::Int {
            ty: Some(ty.name.clone()),
            value: Int128::Signed(v as i128),
        }
    }

    fn render_pointer(
        &self,
        place: &Place,
        ty: &Type,
        target: Option<TypeRef>,
        depth: u32,
        hops: u32,
    ) -> Value {
        let tname = Some(ty.name.clone());
        if let (Place::Implicit(pointee), Some(t)) = (place, target) {
            // Optimized away, but what it pointed to is known: show that.
            return Value::Pointer {
                ty: tname,
                address: "<synthetic pointer>".into(),
                target: (depth > 0)
                    .then(|| self.render_pointee(pointee, &self.ty(t), depth, hops))
                    .flatten()
                    .map(Box::new),
                use_count: None,
                weak_count: None,
            };
        }
        let addr = match self.read_u64_at(place, 0) {
            Ok(a) => a,
            Err(e) => return Value::unavailable(tname, e),
        };
        // Null is one shape whatever it points to (a C string, a function, an object).
        if addr == 0 {
            return Value::null(tname);
        }
        let address = format!("{addr:#x}");
        let Some(t) = target else {
            return Value::Pointer {
                ty: tname,
                address,
                target: None,
                use_count: None,
                weak_count: None,
            };
        };
        let tt = self.ty(t);
        // C strings: `char *` and `const char *`.
        if tt.lang != Lang::Rust
            && matches!(tt.kind, TypeKind::Base(e) if (e == gimli::DW_ATE_signed_char || e == gimli::DW_ATE_unsigned_char) && tt.size == Some(1))
        {
            return match self.c_string(addr, None) {
                Ok((s, len, truncated)) => Value::String {
                    ty: tname,
                    value: s,
                    len,
                    truncated,
                },
                Err(e) => Value::unavailable(tname, e),
            };
        }
        if matches!(tt.kind, TypeKind::Function) {
            let symbol = self.symbol_for(addr).unwrap_or_else(|| address.clone());
            return Value::Function { ty: tname, symbol };
        }
        // At the depth limit a pointer shows its address only (the kernel's capture plans
        // copy nothing behind it either).
        let target = if depth == 0 || matches!(tt.kind, TypeKind::Void) {
            None
        } else {
            self.render_pointee(&Place::Memory(addr), &tt, depth, hops)
        };
        Value::Pointer {
            ty: tname,
            address,
            target: target.map(Box::new),
            use_count: None,
            weak_count: None,
        }
    }

    /// The name of a function at a run-time address, if this object knows it.
    fn symbol_for(&self, addr: u64) -> Option<String> {
        self.target.map(|t| t.describe(addr))
    }

    fn render_array(
        &self,
        place: &Place,
        ty: &Type,
        elem: TypeRef,
        count: Option<u64>,
        depth: u32,
    ) -> Value {
        let tname = Some(ty.name.clone());
        let et = self.ty(elem);
        let n = count.unwrap_or(0);
        // char[N]: a string up to the first NUL.
        if et.lang != Lang::Rust
            && matches!(et.kind, TypeKind::Base(e) if (e == gimli::DW_ATE_signed_char || e == gimli::DW_ATE_unsigned_char) && et.size == Some(1))
        {
            let take = (n as usize).min(self.limits.string_bytes + 1);
            return match self.bytes(place, 0, take) {
                Ok(b) => {
                    let end = b.iter().position(|c| *c == 0);
                    let s = &b[..end.unwrap_or(b.len()).min(self.limits.string_bytes)];
                    Value::String {
                        ty: tname,
                        value: escape_bytes(s),
                        len: end.map(|e| e as u64).unwrap_or(n),
                        truncated: end.is_none() && n as usize > self.limits.string_bytes,
                    }
                }
                Err(e) => Value::unavailable(tname, e),
            };
        }
        self.render_list(place, ty.name.clone(), &et, n, depth)
    }

    /// Renders `len` elements of type `et` laid out from `place`.
    pub fn render_list(
        &self,
        place: &Place,
        tname: String,
        et: &Type,
        len: u64,
        depth: u32,
    ) -> Value {
        let stride = et.size.unwrap_or(0);
        let shown = if depth == 0 {
            0
        } else {
            len.min(self.limits.items as u64)
        };
        let mut items = Vec::new();
        for i in 0..shown {
            let v = self.render(&Self::sub_place(place, i * stride), et, depth - 1);
            let stop = matches!(&v, Value::Unavailable { reason, .. } if reason.contains("limit"));
            items.push(v);
            if stop {
                break;
            }
        }
        Value::List {
            ty: Some(tname),
            cap: None,
            len,
            truncated: (items.len() as u64) < len,
            items,
        }
    }

    fn render_variants(&self, place: &Place, ty: &Type, vp: &VariantPart, depth: u32) -> Value {
        let tname = Some(ty.name.clone());
        let Some(variant) = self.active_variant(place, vp) else {
            return Value::unavailable(tname, "unknown enum discriminant");
        };
        let vt = match variant.member.ty {
            Some(t) => self.ty(t),
            None => return Value::unavailable(tname, UNSUPPORTED),
        };
        let vplace = Self::sub_place(place, variant.member.offset);
        let fields = match self.render(&vplace, &vt, depth.max(1)) {
            Value::Struct { fields, .. } => fields,
            _ => Fields::default(),
        };
        Value::Enum {
            ty: tname,
            variant: variant.member.name.clone(),
            fields,
        }
    }

    /// Which variant of a Rust enum is live: the one whose discriminant value matches, else the
    /// one without a value (the niche-optimized default).
    pub fn active_variant<'v>(
        &self,
        place: &Place,
        vp: &'v VariantPart,
    ) -> Option<&'v crate::index::types::Variant> {
        let Some(d) = &vp.discr else {
            return vp.variants.first();
        };
        let dt = d.ty.map(|t| self.ty(t));
        let size = dt.as_ref().and_then(|t| t.size).unwrap_or(8) as usize;
        let b = self.bytes(place, d.offset, size.min(16)).ok()?;
        let v = int_from(&b, false) as u64;
        let mask = if size >= 8 {
            u64::MAX
        } else {
            (1u64 << (size * 8)) - 1
        };
        vp.variants
            .iter()
            .find(|var| var.discr_value.is_some_and(|x| x & mask == v))
            .or_else(|| vp.variants.iter().find(|var| var.discr_value.is_none()))
    }

    /// Reads a NUL-terminated string: (text, length, truncated).
    pub fn c_string(&self, addr: u64, max: Option<usize>) -> Result<(String, u64, bool), String> {
        let limit = max.unwrap_or(self.limits.string_bytes);
        let mut out = Vec::new();
        let mut a = addr;
        // Read up to page boundaries so a string ending just before an unmapped page still reads.
        while out.len() <= limit {
            let to_page = (4096 - (a % 4096)) as usize;
            let chunk = to_page.min(limit + 1 - out.len()).max(1);
            let b = self.bytes(&Place::Memory(a), 0, chunk)?;
            if let Some(end) = b.iter().position(|c| *c == 0) {
                out.extend_from_slice(&b[..end]);
                let len = out.len() as u64;
                return Ok((escape_bytes(&out), len, false));
            }
            out.extend_from_slice(&b);
            a += chunk as u64;
        }
        out.truncate(limit);
        Ok((escape_bytes(&out), out.len() as u64, true))
    }

    /// Reads `len` bytes of string data at `ptr`, capped by the limits.
    pub fn string_at(&self, ptr: u64, len: u64, ty: Option<String>) -> Value {
        let take = (len as usize).min(self.limits.string_bytes);
        match self.bytes(&Place::Memory(ptr), 0, take) {
            Ok(b) => Value::String {
                ty,
                value: escape_bytes(&b),
                len,
                truncated: (take as u64) < len,
            },
            Err(e) => Value::unavailable(ty, e),
        }
    }
}

/// Little-endian bytes to an unsigned integer of up to 128 bits.
pub fn uint_from(b: &[u8]) -> Int128 {
    let mut buf = [0u8; 16];
    let n = b.len().min(16);
    buf[..n].copy_from_slice(&b[..n]);
    Int128::Unsigned(u128::from_le_bytes(buf))
}

/// Little-endian bytes to an integer of up to 128 bits.
pub fn int_from(b: &[u8], signed: bool) -> i128 {
    let mut buf = [0u8; 16];
    let n = b.len().min(16);
    buf[..n].copy_from_slice(&b[..n]);
    if signed && n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
        for x in buf.iter_mut().skip(n) {
            *x = 0xff;
        }
    }
    i128::from_le_bytes(buf)
}

/// Bytes to text: valid UTF-8 as is, each invalid byte as `\xNN`.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_sign_extend() {
        assert_eq!(int_from(&[0xff], true), -1);
        assert_eq!(int_from(&[0xff], false), 255);
        assert_eq!(int_from(&[0x00, 0x80], true), -32768);
    }

    #[test]
    fn invalid_utf8_is_escaped() {
        assert_eq!(escape_bytes(b"ok\xffz"), "ok\\xffz");
    }
}
