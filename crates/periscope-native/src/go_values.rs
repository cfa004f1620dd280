//! Go's values the way Go (and Delve) shows them: `string` as text, slices as lists (with their
//! capacity), maps as maps, interfaces and `error` as their dynamic value, channels by element
//! type, length and capacity, `time.Time` and `time.Duration` readably, and `nil` as the null
//! pointer of every language (`address: "0x0"`, no target).
//!
//! Layout facts, found by field names from the DWARF the Go linker writes (checked against Go
//! 1.21–1.27):
//! - `string { str *uint8; len int }`, `[]T { array *T; len int; cap int }`.
//! - `interface {}` is `runtime.eface { _type *abi.Type; data unsafe.Pointer }`, other interfaces
//!   `runtime.iface { tab *abi.ITab { Inter; Type; … }; data }`. The dynamic type's DWARF type is
//!   the one whose `DW_AT_go_runtime_type` is the descriptor's offset from `runtime.types`. A
//!   pointer-shaped value is stored in `data` itself, anything else is pointed to by it.
//! - Maps (Go 1.24+, Swiss tables): `map[K]V` points to `map<K,V> { used; dirPtr; dirLen; … }`.
//!   With `dirLen == 0`, `dirPtr` is one group; otherwise an array of `dirLen` pointers to
//!   `table<K,V> { groups: groupReference { data; lengthMask } }` (a table may appear several
//!   times). A group is `{ ctrl uint64; slots [8]struct { key K; elem V } }`; slot i is full when
//!   control byte i has its top bit clear.
//! - `chan T` points to `hchan<T> { qcount; dataqsiz; …; closed }`.
//! - `time.Time { wall uint64; ext int64; loc }`: with the monotonic bit (1<<63) in `wall`, the
//!   seconds since year 1 are 59,453,308,800 + `wall<<1>>31`; otherwise `ext`; nanoseconds are
//!   `wall & (1<<30 - 1)`.

use crate::frame::Place;
use crate::index::types::{Type, TypeKind};
use crate::values::Reader;
use periscope_core::value::{Entry, Fields, Int128, Value};

/// Groups of a map read at most (a corrupt length mask must not make us read gigabytes).
const MAX_GROUPS: u64 = 1 << 14;
/// Slots per Swiss-table group.
const SLOTS: u64 = 8;

impl Reader<'_> {
    /// Renders a Go type specially, or `None` to fall back to the generic renderer.
    pub(crate) fn render_go_special(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let name = ty.name.as_str();
        match &ty.kind {
            // By shape, so named string and slice types (`type plainError string`) read too.
            TypeKind::Struct { .. } if is_string(ty) => {
                let (ptr, len) = self.go_string_parts(place, ty)?;
                Some(self.string_at(ptr, len, Some(name.into())))
            }
            TypeKind::Struct { .. } if is_slice(ty) => self.go_slice(place, ty, depth),
            TypeKind::Struct { .. } if is_interface(ty) => {
                Some(self.go_interface(place, ty, depth))
            }
            TypeKind::Struct { .. } if name == "time.Time" => self.go_time(place, ty),
            TypeKind::Base(_) if name == "time.Duration" => {
                let ns = self.read_u64_at(place, 0).ok()? as i64;
                Some(Value::String {
                    ty: Some(name.into()),
                    value: duration_text(ns),
                    len: 0,
                    truncated: false,
                })
            }
            TypeKind::Pointer { target } => {
                let addr = self.read_u64_at(place, 0).ok()?;
                if addr == 0 {
                    return Some(nil(name));
                }
                let target = self.ty((*target)?);
                if name.starts_with("map[") {
                    return Some(self.go_map(addr, ty, &target, depth));
                }
                if name.starts_with("chan ") || name.starts_with("<-chan ") {
                    return Some(self.go_chan(addr, ty, &target));
                }
                None
            }
            _ => None,
        }
    }

    /// (data pointer, length) of a Go string.
    pub fn go_string_parts(&self, place: &Place, ty: &Type) -> Option<(u64, u64)> {
        let ptr = ty.member("str")?;
        let len = ty.member("len")?;
        Some((
            self.read_u64_at(place, ptr.offset).ok()?,
            self.read_u64_at(place, len.offset).ok()?,
        ))
    }

    /// (array pointer, length, capacity, element type) of a Go slice.
    pub fn go_slice_parts(
        &self,
        place: &Place,
        ty: &Type,
    ) -> Option<(u64, u64, u64, std::sync::Arc<Type>)> {
        let array = ty.member("array")?;
        let len = ty.member("len")?;
        let cap = ty.member("cap")?;
        let et = match self.ty(array.ty?).kind {
            TypeKind::Pointer { target: Some(t) } => self.ty(t),
            _ => return None,
        };
        Some((
            self.read_u64_at(place, array.offset).ok()?,
            self.read_u64_at(place, len.offset).ok()?,
            self.read_u64_at(place, cap.offset).ok()?,
            et,
        ))
    }

    fn go_slice(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let (ptr, len, cap, et) = self.go_slice_parts(place, ty)?;
        if ptr == 0 && len == 0 {
            return Some(nil(&ty.name));
        }
        if len > 1 << 40 || cap < len {
            return Some(Value::unavailable(
                Some(ty.name.clone()),
                format!("implausible slice (len {len}, cap {cap})"),
            ));
        }
        let mut v = self.render_list(&Place::Memory(ptr), ty.name.clone(), &et, len, depth);
        if let Value::List { cap: c, .. } = &mut v {
            *c = Some(cap);
        }
        Some(v)
    }

    /// An interface as its dynamic value, typed with the dynamic type's name.
    fn go_interface(&self, place: &Place, ty: &Type, depth: u32) -> Value {
        let tname = Some(ty.name.clone());
        let Some(data_m) = ty.member("data") else {
            return Value::unavailable(tname, "an interface without data");
        };
        let descriptor = match (ty.member("_type"), ty.member("tab")) {
            (Some(t), _) => self.read_u64_at(place, t.offset),
            (None, Some(tab)) => match self.read_u64_at(place, tab.offset) {
                Ok(0) => Ok(0),
                // itab { Inter *InterfaceType; Type *Type; … }
                Ok(itab) => self.read_u64_at(&Place::Memory(itab), 8),
                Err(e) => Err(e),
            },
            _ => return Value::unavailable(tname, "an interface without a type"),
        };
        let descriptor = match descriptor {
            Ok(d) => d,
            Err(e) => return Value::unavailable(tname, e),
        };
        if descriptor == 0 {
            return nil(&ty.name);
        }
        let data = match self.read_u64_at(place, data_m.offset) {
            Ok(d) => d,
            Err(e) => return Value::unavailable(tname, e),
        };
        let Some(dynamic) = self.go_dynamic_type(descriptor) else {
            return Value::unavailable(
                tname,
                format!("dynamic type at {descriptor:#x} not found in the debug info"),
            );
        };
        // Pointer-shaped values live in the data word itself.
        let place = if is_pointer_shaped(self, &dynamic) {
            Place::Bytes(data.to_le_bytes().to_vec())
        } else {
            Place::Memory(data)
        };
        // An error's text is worth its level (the struct behind the pointer) whatever the
        // depth left.
        let depth = if is_text_error(&dynamic.name) {
            depth.max(1)
        } else {
            depth
        };
        let v = self.render(&place, &dynamic, depth);
        error_text(v, &dynamic.name)
    }

    /// The DWARF type of the runtime type descriptor at `addr` (a run-time address).
    fn go_dynamic_type(&self, addr: u64) -> Option<std::sync::Arc<Type>> {
        let base = self.index.go_types_base? + self.bias();
        let r = self.index.go_runtime_type(addr.checked_sub(base)?)?;
        Some(self.ty(r))
    }

    fn go_map(&self, addr: u64, ty: &Type, map: &Type, depth: u32) -> Value {
        if map.member("buckets").is_some() && map.member("B").is_some() {
            return self.go_bucket_map(addr, ty, map, depth);
        }
        let tname = Some(ty.name.clone());
        let m = Place::Memory(addr);
        let field = |n: &str| -> Result<u64, String> {
            let f = map
                .member(n)
                .ok_or_else(|| format!("no `{n}` in {}", map.name))?;
            self.read_u64_at(&m, f.offset)
        };
        let (used, dir_ptr, dir_len) = match (field("used"), field("dirPtr"), field("dirLen")) {
            (Ok(u), Ok(p), Ok(l)) => (u, p, l),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return Value::unavailable(tname, format!("not a Swiss-table map: {e}"))
            }
        };
        let Some(group_ty) = self.map_group_type(map) else {
            return Value::unavailable(tname, "the map's group type is not in the debug info");
        };
        let mut entries = Vec::new();
        let want = if depth == 0 {
            0
        } else {
            (self.limits.items as u64).min(used)
        };
        let mut groups: Vec<(u64, u64)> = Vec::new(); // (first group, count)
        if dir_len == 0 {
            if dir_ptr != 0 {
                groups.push((dir_ptr, 1));
            }
        } else {
            let mut seen = Vec::new();
            for i in 0..dir_len.min(1024) {
                let Ok(table) = self.read_u64_at(&Place::Memory(dir_ptr + i * 8), 0) else {
                    break;
                };
                if table == 0 || seen.contains(&table) {
                    continue;
                }
                seen.push(table);
                if let Some(g) = self.table_groups(table) {
                    groups.push(g);
                }
            }
        }
        let gsize = group_ty.size.unwrap_or(0);
        let (ctrl_off, slots) = match (group_ty.member("ctrl"), group_ty.member("slots")) {
            (Some(c), Some(s)) => (c.offset, s),
            _ => return Value::unavailable(tname, "unexpected map group layout"),
        };
        let slot_ty = match slots.ty.map(|t| self.ty(t)).map(|t| t.kind.clone()) {
            Some(TypeKind::Array { elem, .. }) => self.ty(elem),
            _ => return Value::unavailable(tname, "unexpected map group layout"),
        };
        let (Some(key_m), Some(elem_m)) = (slot_ty.member("key"), slot_ty.member("elem")) else {
            return Value::unavailable(tname, "unexpected map slot layout");
        };
        let (Some(kt), Some(vt)) = (key_m.ty.map(|t| self.ty(t)), elem_m.ty.map(|t| self.ty(t)))
        else {
            return Value::unavailable(tname, "unexpected map slot layout");
        };
        let stride = slot_ty.size.unwrap_or(0);
        'groups: for (first, count) in groups {
            for g in 0..count.min(MAX_GROUPS) {
                let group = first + g * gsize;
                let Ok(ctrl) = self.read_u64_at(&Place::Memory(group + ctrl_off), 0) else {
                    continue;
                };
                for s in 0..SLOTS {
                    if entries.len() as u64 >= want {
                        break 'groups;
                    }
                    if (ctrl >> (s * 8)) & 0x80 != 0 {
                        continue; // empty or deleted
                    }
                    let slot = Place::Memory(group + slots.offset + s * stride);
                    entries.push(Entry {
                        key: self.render(&Reader::sub_place(&slot, key_m.offset), &kt, depth - 1),
                        value: self.render(
                            &Reader::sub_place(&slot, elem_m.offset),
                            &vt,
                            depth - 1,
                        ),
                    });
                }
            }
        }
        Value::Map {
            ty: tname,
            len: used,
            truncated: (entries.len() as u64) < used,
            entries,
        }
    }

    /// A map of Go 1.21–1.23: `hash<K,V> { count; B; buckets; oldbuckets; … }`, 2^B buckets
    /// `bucket<K,V> { tophash [8]uint8; keys [8]K; values [8]V; overflow *bucket }`; slot i is
    /// full when its tophash is at least 5 (below are the empty and evacuated marks). While the
    /// map grows, entries not yet moved are read from the old buckets.
    fn go_bucket_map(&self, addr: u64, ty: &Type, map: &Type, depth: u32) -> Value {
        let tname = Some(ty.name.clone());
        let m = Place::Memory(addr);
        let word = |n: &str, size: usize| -> Option<u64> {
            let f = map.member(n)?;
            let b = self.bytes(&m, f.offset, size).ok()?;
            let mut w = [0u8; 8];
            w[..size].copy_from_slice(&b);
            Some(u64::from_le_bytes(w))
        };
        let (Some(count), Some(b), Some(buckets), Some(old)) = (
            word("count", 8),
            word("B", 1),
            word("buckets", 8),
            word("oldbuckets", 8),
        ) else {
            return Value::unavailable(tname, "unexpected map layout");
        };
        let Some(bucket_ty) = map
            .member("buckets")
            .and_then(|f| f.ty)
            .map(|t| self.ty(t))
            .and_then(|t| match t.kind {
                TypeKind::Pointer { target: Some(p) } => Some(self.ty(p)),
                _ => None,
            })
        else {
            return Value::unavailable(tname, "the map's bucket type is not in the debug info");
        };
        let (Some(tophash), Some(keys), Some(values), Some(overflow)) = (
            bucket_ty.member("tophash"),
            bucket_ty.member("keys"),
            bucket_ty.member("values"),
            bucket_ty.member("overflow"),
        ) else {
            return Value::unavailable(tname, "unexpected map bucket layout");
        };
        let elem = |f: &crate::index::types::Member| match f
            .ty
            .map(|t| self.ty(t))
            .map(|t| t.kind.clone())
        {
            Some(TypeKind::Array { elem, .. }) => Some(self.ty(elem)),
            _ => None,
        };
        let (Some(kt), Some(vt)) = (elem(keys), elem(values)) else {
            return Value::unavailable(tname, "unexpected map bucket layout");
        };
        let (ks, vs) = (kt.size.unwrap_or(0), vt.size.unwrap_or(0));
        let want = if depth == 0 {
            0
        } else {
            (self.limits.items as u64).min(count)
        };
        let mut entries = Vec::new();
        let nbuckets = (1u64 << b.min(20)).min(MAX_GROUPS);
        let bsize = bucket_ty.size.unwrap_or(0);
        // Old buckets first (entries still there), then the new ones; evacuated slots are
        // marked (tophash 2..=4) and skipped.
        let tables = [(old, nbuckets / 2), (buckets, nbuckets)];
        'all: for (base, n) in tables {
            if base == 0 {
                continue;
            }
            for i in 0..n {
                let mut bucket = base + i * bsize;
                for _ in 0..64 {
                    let Ok(th) = self.bytes(&Place::Memory(bucket), tophash.offset, 8) else {
                        break;
                    };
                    for s in 0..SLOTS {
                        if entries.len() as u64 >= want {
                            break 'all;
                        }
                        if th[s as usize] < 5 {
                            continue;
                        }
                        let at = Place::Memory(bucket);
                        entries.push(Entry {
                            key: self.render(
                                &Reader::sub_place(&at, keys.offset + s * ks),
                                &kt,
                                depth - 1,
                            ),
                            value: self.render(
                                &Reader::sub_place(&at, values.offset + s * vs),
                                &vt,
                                depth - 1,
                            ),
                        });
                    }
                    match self.read_u64_at(&Place::Memory(bucket), overflow.offset) {
                        Ok(next) if next != 0 => bucket = next,
                        _ => break,
                    }
                }
            }
        }
        Value::Map {
            ty: tname,
            len: count,
            truncated: (entries.len() as u64) < count,
            entries,
        }
    }

    /// (first group, number of groups) of a Swiss table.
    fn table_groups(&self, table: u64) -> Option<(u64, u64)> {
        // table<K,V> { used u16; capacity u16; growthLeft u16; localDepth u8; index int;
        //              groups groupReference { data *group; lengthMask uint64 } }
        let t = self.table_type()?;
        let groups = t.member("groups")?;
        let gr = self.ty(groups.ty?);
        let data = gr.member("data")?;
        let mask = gr.member("lengthMask")?;
        let at = Place::Memory(table + groups.offset);
        Some((
            self.read_u64_at(&at, data.offset).ok()?,
            self.read_u64_at(&at, mask.offset).ok()? + 1,
        ))
    }

    /// Any `table<…>` type: its layout does not depend on K and V (groups are sized by the
    /// group type).
    fn table_type(&self) -> Option<std::sync::Arc<Type>> {
        self.index.go_table_type().map(|r| self.ty(r))
    }

    /// `noalg.map.group[K]V` of a `map<K,V>`: through `dirPtr` (**table<K,V>) → table →
    /// groups.data (*group).
    fn map_group_type(&self, map: &Type) -> Option<std::sync::Arc<Type>> {
        let mut t = self.ty(map.member("dirPtr")?.ty?);
        for _ in 0..2 {
            t = match t.kind {
                TypeKind::Pointer { target: Some(p) } => self.ty(p),
                _ => return None,
            };
        }
        let groups = self.ty(t.member("groups")?.ty?);
        match self.ty(groups.member("data")?.ty?).kind {
            TypeKind::Pointer { target: Some(g) } => Some(self.ty(g)),
            _ => None,
        }
    }

    fn go_chan(&self, addr: u64, ty: &Type, hchan: &Type) -> Value {
        let at = Place::Memory(addr);
        let read = |n: &str| {
            hchan
                .member(n)
                .and_then(|m| self.read_u64_at(&at, m.offset).ok())
        };
        let (Some(len), Some(cap)) = (read("qcount"), read("dataqsiz")) else {
            return Value::unavailable(Some(ty.name.clone()), "unexpected channel layout");
        };
        let closed = read("closed").is_some_and(|c| c as u32 != 0);
        let elem = ty
            .name
            .trim_start_matches("<-")
            .trim_start_matches("chan<-")
            .trim_start_matches("chan ")
            .trim()
            .to_string();
        let int = |v: u64| Value::Int {
            ty: Some("int".into()),
            value: Int128::Unsigned(v.into()),
        };
        Value::Struct {
            ty: Some(ty.name.clone()),
            fields: Fields(vec![
                (
                    "elem".into(),
                    Value::String {
                        ty: None,
                        len: elem.len() as u64,
                        value: elem,
                        truncated: false,
                    },
                ),
                ("len".into(), int(len)),
                ("cap".into(), int(cap)),
                (
                    "closed".into(),
                    Value::Bool {
                        ty: Some("bool".into()),
                        value: closed,
                    },
                ),
            ]),
            truncated: false,
        }
    }

    fn go_time(&self, place: &Place, ty: &Type) -> Option<Value> {
        let wall = self.read_u64_at(place, ty.member("wall")?.offset).ok()?;
        let ext = self.read_u64_at(place, ty.member("ext")?.offset).ok()? as i64;
        const HAS_MONOTONIC: u64 = 1 << 63;
        const WALL_TO_INTERNAL: i64 = 59_453_308_800; // 1885-01-01 in seconds since year 1
        const UNIX_TO_INTERNAL: i64 = 62_135_596_800; // 1970-01-01 in seconds since year 1
        let nsec = (wall & ((1 << 30) - 1)) as i64;
        let sec = if wall & HAS_MONOTONIC != 0 {
            WALL_TO_INTERNAL + ((wall << 1) >> 31) as i64
        } else {
            ext
        };
        let unix = sec.checked_sub(UNIX_TO_INTERNAL)?;
        let t = time::OffsetDateTime::from_unix_timestamp(unix).ok()?
            + time::Duration::nanoseconds(nsec);
        let text = t
            .format(&time::format_description::well_known::Rfc3339)
            .ok()?;
        Some(Value::String {
            ty: Some(ty.name.clone()),
            len: text.len() as u64,
            value: text,
            truncated: false,
        })
    }

    /// The load bias of the object this reader reads types from (0 when not known: a non-PIE
    /// executable, Go's default).
    fn bias(&self) -> u64 {
        self.target
            .and_then(|t| {
                t.objects
                    .iter()
                    .find(|o| std::ptr::eq(&*o.index, self.index))
            })
            .map_or(0, |o| o.bias)
    }
}

/// A Go type that is exactly these members, in this order.
fn has_members(ty: &Type, names: &[&str]) -> bool {
    match &ty.kind {
        TypeKind::Struct { members, .. } => {
            ty.lang == crate::index::Lang::Go
                && members.len() == names.len()
                && members.iter().zip(names).all(|(m, n)| m.name == *n)
        }
        _ => false,
    }
}

/// A Go string, by shape, so named string types (`type plainError string`) count too.
pub(crate) fn is_string(ty: &Type) -> bool {
    has_members(ty, &["str", "len"])
}

/// A Go slice, by shape (named slice types too).
pub(crate) fn is_slice(ty: &Type) -> bool {
    has_members(ty, &["array", "len", "cap"])
}

/// A Go interface: `runtime.eface` or `runtime.iface`, or a named interface type over them.
pub(crate) fn is_interface(ty: &Type) -> bool {
    ty.lang == crate::index::Lang::Go
        && ty.member("data").is_some()
        && (ty.member("_type").is_some() || ty.member("tab").is_some())
        && matches!(&ty.kind, TypeKind::Struct { members, .. } if members.len() == 2)
}

/// Whether Go stores a value of this type directly in an interface's data word.
fn is_pointer_shaped(r: &Reader, t: &Type) -> bool {
    match &t.kind {
        TypeKind::Pointer { .. } | TypeKind::Function => true,
        TypeKind::Struct { members, .. } if members.len() == 1 => members[0]
            .ty
            .is_some_and(|m| is_pointer_shaped(r, &r.ty(m))),
        TypeKind::Array {
            elem,
            count: Some(1),
        } => is_pointer_shaped(r, &r.ty(*elem)),
        _ => false,
    }
}

/// Go's nil, for a pointer, map, channel, slice or interface with no value: the one null shape
/// of every language (`address: "0x0"`, no target), so a consumer tests for null one way.
fn nil(ty: &str) -> Value {
    Value::null(Some(ty.to_string()))
}

/// The common errors as their text: `*errors.errorString` and `*fmt.wrapError` hold it in a
/// field (`s`, `msg`); others are shown as their value.
fn error_text(v: Value, dynamic: &str) -> Value {
    let Value::Pointer {
        target: Some(inner),
        ..
    } = &v
    else {
        return v;
    };
    let Some(field) = text_field(dynamic) else {
        return v;
    };
    match inner.as_ref() {
        Value::Struct { fields, .. } => match fields.0.iter().find(|(n, _)| n == field) {
            Some((
                _,
                Value::String {
                    value,
                    len,
                    truncated,
                    ..
                },
            )) => Value::String {
                ty: Some(dynamic.to_string()),
                value: value.clone(),
                len: *len,
                truncated: *truncated,
            },
            _ => v,
        },
        _ => v,
    }
}

/// The field holding the text of the common error types.
fn text_field(dynamic: &str) -> Option<&'static str> {
    match dynamic {
        "*errors.errorString" => Some("s"),
        "*fmt.wrapError" | "*fmt.wrapErrors" => Some("msg"),
        _ => None,
    }
}

fn is_text_error(dynamic: &str) -> bool {
    text_field(dynamic).is_some()
}

/// A duration as Go's `time.Duration.String` writes it: `1h2m3.5s`, `363ms`, `1.5µs`, `0s`.
pub fn duration_text(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let frac = |v: u64, unit: u64| -> String {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let f = format!("{rest:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    };
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 1_000))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 1_000_000))
    } else {
        let h = u / 3_600_000_000_000;
        let m = (u / 60_000_000_000) % 60;
        let s = frac(u % 60_000_000_000, 1_000_000_000);
        match (h, m) {
            (0, 0) => format!("{s}s"),
            (0, m) => format!("{m}m{s}s"),
            (h, m) => format!("{h}h{m}m{s}s"),
        }
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::duration_text;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(363_000_000), "363ms");
        assert_eq!(duration_text(1_500), "1.5µs");
        assert_eq!(duration_text(1_500_000_000), "1.5s");
        assert_eq!(duration_text(3_723_000_000_000), "1h2m3s");
        assert_eq!(duration_text(-2_000_000), "-2ms");
    }
}
