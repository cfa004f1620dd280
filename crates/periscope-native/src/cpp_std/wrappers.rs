//! The standard library types of fixed shape (and `deque`'s and `vector<bool>`'s buffers):
//! - `deque<T>`: `_M_impl._M_start`/`_M_finish` are iterators `{ _M_cur, _M_first, _M_last,
//!   _M_node }` into a map of node buffers of `__deque_buf_size(sizeof T)` elements each
//!   (512 bytes' worth, at least one).
//! - `vector<bool>`: bits from `_M_start { _M_p, _M_offset }` to `_M_finish`, 64 to a word.
//! - `optional<T>`: `_M_payload._M_engaged` and the value `_M_payload._M_payload._M_value`:
//!   an enum, `Some(value)` or `None`.
//! - `variant<…>`: `_M_index` (all ones: valueless) picks the alternative in `_M_u`, a
//!   `_Variadic_union` of `_M_first` (an `_Uninitialized<T>` whose `_M_storage` holds it) and
//!   `_M_rest`: an enum whose variant is the index, its one field the value.
//! - `tuple<…>`: the `_Head_base<I, T>` bases of the `_Tuple_impl` chain, in the order of `I`;
//!   `pair`: `first` and `second`.
//! - `chrono::duration<Rep, ratio<N, D>>`: `__r` with its unit, `251ms`.

use super::Reader;
use crate::frame::Place;
use crate::index::types::{Type, TypeKind};
use crate::values::int_from;
use periscope_core::value::{Fields, Value};
use std::sync::Arc;

/// The longest chain of `_Variadic_union`s or `_Tuple_impl`s followed.
const MAX_ALTERNATIVES: u64 = 64;
/// Bounds a deque or bit vector's length read from memory.
const MAX_LEN: u64 = 1 << 40;

/// A `deque`'s iterator: (`_M_cur`, `_M_first`, `_M_last`, `_M_node`).
type DequeIter = (u64, u64, u64, u64);

impl Reader<'_> {
    fn deque_iter(&self, place: &Place, ty: &Type, name: &str) -> Result<DequeIter, String> {
        let (off, it) = self
            .dig(ty, &["_M_impl", name])
            .ok_or_else(|| format!("std::deque without {name}"))?;
        let word = |m: &str| -> Result<u64, String> {
            let o = it
                .member(m)
                .ok_or_else(|| format!("std::deque iterator without {m}"))?
                .offset;
            self.read_u64_at(place, off + o)
        };
        Ok((
            word("_M_cur")?,
            word("_M_first")?,
            word("_M_last")?,
            word("_M_node")?,
        ))
    }

    /// (length, element type, buffer size in elements, start iterator) of a `deque`, as
    /// libstdc++'s `operator-` on its iterators computes the length.
    pub(super) fn deque_len(
        &self,
        place: &Place,
        ty: &Type,
    ) -> Result<(u64, Arc<Type>, u64, DequeIter), String> {
        let et = self.ty(ty.param("_Tp").ok_or("std::deque without _Tp")?);
        let size = et
            .size
            .filter(|s| *s > 0)
            .ok_or("element of unknown size")?;
        let per_buffer = if size < 512 { 512 / size } else { 1 };
        let s = self.deque_iter(place, ty, "_M_start")?;
        let f = self.deque_iter(place, ty, "_M_finish")?;
        if s.3 == 0 {
            return Ok((0, et, per_buffer, s));
        }
        let nodes = (f.3 as i128 - s.3 as i128) / 8;
        let len = per_buffer as i128 * (nodes - 1)
            + (f.0 as i128 - f.1 as i128) / size as i128
            + (s.2 as i128 - s.0 as i128) / size as i128;
        if !(0..=MAX_LEN as i128).contains(&len) {
            return Err(format!("implausible std::deque length {len}"));
        }
        Ok((len as u64, et, per_buffer, s))
    }

    /// Element `i` of a `deque`: its buffer from the map of nodes, then its slot.
    pub(super) fn deque_element(
        &self,
        place: &Place,
        ty: &Type,
        i: u64,
    ) -> Result<(Place, Arc<Type>), String> {
        let (_, et, per_buffer, s) = self.deque_len(place, ty)?;
        let size = et.size.unwrap_or(1).max(1);
        let at = i + (s.0.wrapping_sub(s.1)) / size;
        let node = s.3 + (at / per_buffer) * 8;
        let buffer = self.read_u64_at(&Place::Memory(node), 0)?;
        Ok((Place::Memory(buffer + (at % per_buffer) * size), et))
    }

    pub(super) fn render_deque(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let tname = Some(ty.name.clone());
        let (len, et, ..) = match self.deque_len(place, ty) {
            Ok(d) => d,
            Err(e) => return Some(Value::unavailable(tname, e)),
        };
        let shown = if depth == 0 {
            0
        } else {
            len.min(self.limits.items as u64)
        };
        let mut items = Vec::new();
        for i in 0..shown {
            match self.deque_element(place, ty, i) {
                Ok((p, et)) => items.push(self.render(&p, &et, depth - 1)),
                Err(e) => {
                    items.push(Value::unavailable(Some(et.name.clone()), e));
                    break;
                }
            }
        }
        Some(Value::List {
            ty: tname,
            len,
            cap: None,
            truncated: (items.len() as u64) < len,
            items,
        })
    }

    /// (length in bits, first word's address, first bit) of a `vector<bool>`.
    pub(super) fn bit_vector_len(
        &self,
        place: &Place,
        ty: &Type,
    ) -> Result<(u64, u64, u64), String> {
        let iter = |name: &str| -> Result<(u64, u64), String> {
            let (off, it) = self
                .dig(ty, &[name])
                .ok_or_else(|| format!("std::vector<bool> without {name}"))?;
            let (p, _) = self
                .find_member(&it, "_M_p", 0, 0)
                .ok_or("bit iterator without _M_p")?;
            let (o, _) = self
                .find_member(&it, "_M_offset", 0, 0)
                .ok_or("bit iterator without _M_offset")?;
            let word = self.read_u64_at(place, off + p)?;
            let bit = self.bytes(place, off + o, 4)?;
            Ok((word, int_from(&bit, false) as u64))
        };
        let (sp, so) = iter("_M_start")?;
        let (fp, fo) = iter("_M_finish")?;
        let bits = (fp as i128 - sp as i128) * 8 + fo as i128 - so as i128;
        if !(0..=MAX_LEN as i128).contains(&bits) {
            return Err(format!("implausible std::vector<bool> length {bits}"));
        }
        Ok((bits as u64, sp, so))
    }

    pub(super) fn render_bit_vector(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let tname = Some(ty.name.clone());
        let (len, word, first) = match self.bit_vector_len(place, ty) {
            Ok(b) => b,
            Err(e) => return Some(Value::unavailable(tname, e)),
        };
        let shown = if depth == 0 {
            0
        } else {
            len.min(self.limits.items as u64)
        };
        let nbytes = (first + shown).div_ceil(8) as usize;
        let bytes = match self.bytes(&Place::Memory(word), 0, nbytes) {
            Ok(b) => b,
            Err(e) => return Some(Value::unavailable(tname, e)),
        };
        let items = (first..first + shown)
            .map(|b| Value::Bool {
                ty: Some("bool".into()),
                value: bytes[(b / 8) as usize] & (1 << (b % 8)) != 0,
            })
            .collect::<Vec<_>>();
        Some(Value::List {
            ty: tname,
            len,
            cap: None,
            truncated: shown < len,
            items,
        })
    }

    /// The value an `optional` contains, or `None` when it is empty.
    pub(crate) fn optional_payload(
        &self,
        place: &Place,
        ty: &Type,
    ) -> Result<Option<(Place, Arc<Type>)>, String> {
        let (e_off, _) = self
            .find_member(ty, "_M_engaged", 0, 0)
            .ok_or("std::optional without _M_engaged")?;
        let (v_off, vt) = self
            .find_member(ty, "_M_value", 0, 0)
            .ok_or("std::optional without _M_value")?;
        let engaged = self.bytes(place, e_off, 1)?[0] != 0;
        Ok(engaged.then(|| (Reader::sub_place(place, v_off), self.ty(vt))))
    }

    pub(super) fn render_optional(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let tname = Some(ty.name.clone());
        Some(match self.optional_payload(place, ty) {
            Ok(Some((p, vt))) => Value::Enum {
                ty: tname,
                variant: "Some".into(),
                fields: Fields(vec![(
                    "0".into(),
                    self.render(&p, &vt, depth.saturating_sub(1)),
                )]),
            },
            Ok(None) => Value::Enum {
                ty: tname,
                variant: "None".into(),
                fields: Fields::default(),
            },
            Err(e) => Value::unavailable(tname, e),
        })
    }

    /// The active alternative of a `variant`: its index and where it is, or `None` when the
    /// variant is valueless (`variant_npos`).
    pub(crate) fn variant_active(
        &self,
        place: &Place,
        ty: &Type,
    ) -> Result<Option<(u64, Place, Arc<Type>)>, String> {
        let (i_off, it) = self
            .find_member(ty, "_M_index", 0, 0)
            .ok_or("std::variant without _M_index")?;
        let isize = self.ty(it).size.unwrap_or(1).clamp(1, 8) as usize;
        let index = int_from(&self.bytes(place, i_off, isize)?, false) as u64;
        let npos = if isize >= 8 {
            u64::MAX
        } else {
            (1u64 << (isize * 8)) - 1
        };
        if index == npos {
            return Ok(None);
        }
        if index >= MAX_ALTERNATIVES {
            return Err(format!("implausible std::variant index {index}"));
        }
        let (mut off, mut u) = self
            .find_member(ty, "_M_u", 0, 0)
            .map(|(o, t)| (o, self.ty(t)))
            .ok_or("std::variant without _M_u")?;
        for _ in 0..index {
            let rest = u
                .member("_M_rest")
                .ok_or_else(|| format!("std::variant has no alternative {index}"))?;
            off += rest.offset;
            u = self.ty(rest.ty.ok_or("alternative without type")?);
        }
        let first = u
            .member("_M_first")
            .ok_or("std::variant without _M_first")?;
        let cell = self.ty(first.ty.ok_or("alternative without type")?);
        let storage = cell
            .member("_M_storage")
            .ok_or("std::variant alternative without _M_storage")?;
        // `_Uninitialized<T>` holds T itself, or raw bytes for it (`__aligned_membuf<T>`).
        let vt = self.ty(cell
            .param("_Type")
            .or(storage.ty)
            .ok_or("alternative without type")?);
        Ok(Some((
            index,
            Reader::sub_place(place, off + first.offset + storage.offset),
            vt,
        )))
    }

    pub(super) fn render_variant(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let tname = Some(ty.name.clone());
        Some(match self.variant_active(place, ty) {
            Ok(Some((i, p, vt))) => Value::Enum {
                ty: tname,
                variant: i.to_string(),
                fields: Fields(vec![(
                    "0".into(),
                    self.render(&p, &vt, depth.saturating_sub(1)),
                )]),
            },
            Ok(None) => Value::Enum {
                ty: tname,
                variant: "valueless".into(),
                fields: Fields::default(),
            },
            Err(e) => Value::unavailable(tname, e),
        })
    }

    /// A `tuple`'s elements in order: (offset, type) of each `_Head_base<I, T>`'s value.
    pub(crate) fn tuple_elements(&self, ty: &Type) -> Vec<(u64, Arc<Type>)> {
        let mut heads: Vec<(u64, u64, Arc<Type>)> = Vec::new();
        self.tuple_heads(ty, 0, 0, &mut heads);
        heads.sort_by_key(|h| h.0);
        heads.into_iter().map(|(_, o, t)| (o, t)).collect()
    }

    fn tuple_heads(&self, ty: &Type, base: u64, level: u64, out: &mut Vec<(u64, u64, Arc<Type>)>) {
        let TypeKind::Struct { members, .. } = &ty.kind else {
            return;
        };
        if level > MAX_ALTERNATIVES {
            return;
        }
        for m in members.iter().filter(|m| m.name == "<base>") {
            let Some(t) = m.ty.map(|t| self.ty(t)) else {
                continue;
            };
            if let Some(args) = t.name.strip_prefix("std::_Head_base<") {
                let Some(i) = args.split(',').next().and_then(|i| i.trim().parse().ok()) else {
                    continue;
                };
                // An empty element is the base itself (the empty-base optimisation).
                let (off, vt) = match t
                    .member("_M_head_impl")
                    .and_then(|h| Some((h.offset, h.ty?)))
                {
                    Some((o, vt)) => (o, self.ty(vt)),
                    None => (0, t.clone()),
                };
                out.push((i, base + m.offset + off, vt));
            } else if t.name.starts_with("std::_Tuple_impl<") {
                self.tuple_heads(&t, base + m.offset, level + 1, out);
            }
        }
    }

    pub(super) fn render_tuple(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let parts = self.tuple_elements(ty);
        let fields = parts
            .iter()
            .enumerate()
            .map(|(i, (off, t))| (i.to_string(), (*off, t.clone())))
            .collect::<Vec<_>>();
        Some(self.struct_of(place, ty, fields, depth))
    }

    pub(super) fn render_pair(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let mut fields = Vec::new();
        for name in ["first", "second"] {
            let m = ty.member(name)?;
            fields.push((name.to_string(), (m.offset, self.ty(m.ty?))));
        }
        Some(self.struct_of(place, ty, fields, depth))
    }

    /// A struct of the given (name, (offset, type)) parts, a level of depth as any struct.
    fn struct_of(
        &self,
        place: &Place,
        ty: &Type,
        parts: Vec<(String, (u64, Arc<Type>))>,
        depth: u32,
    ) -> Value {
        if depth == 0 {
            return Value::Struct {
                ty: Some(ty.name.clone()),
                fields: Fields::default(),
                truncated: true,
            };
        }
        let truncated = parts.len() > self.limits.fields;
        let fields = parts
            .into_iter()
            .take(self.limits.fields)
            .map(|(n, (off, t))| {
                (
                    n,
                    self.render(&Reader::sub_place(place, off), &t, depth - 1),
                )
            })
            .collect();
        Value::Struct {
            ty: Some(ty.name.clone()),
            fields: Fields(fields),
            truncated,
        }
    }

    /// A duration's count (`__r`), for computing with.
    pub(crate) fn duration_count(&self, place: &Place, ty: &Type) -> Option<Value> {
        let r = ty.member("__r")?;
        self.render_number(&Reader::sub_place(place, r.offset), &self.ty(r.ty?))
    }

    /// A duration as its count and unit, `251ms`, as C++20's `operator<<` writes it.
    pub(super) fn render_duration(&self, place: &Place, ty: &Type) -> Option<Value> {
        let count = self.duration_count(place, ty)?;
        let ratio = self.ty(ty.param("_Period")?);
        let unit = unit_of(&ratio.name);
        Some(match count {
            Value::Int { value, .. } => text(ty, format!("{value}{unit}")),
            Value::Float { value, .. } => text(ty, format!("{value}{unit}")),
            other => other,
        })
    }
}

fn text(ty: &Type, s: String) -> Value {
    Value::String {
        ty: Some(ty.name.clone()),
        len: s.len() as u64,
        value: s,
        truncated: false,
    }
}

/// The suffix of a `std::ratio<N, D>` period: `ms`, `s`, `min`, or `[N/D]s`.
fn unit_of(ratio: &str) -> String {
    let args = ratio
        .split_once('<')
        .map(|(_, a)| a.trim_end_matches(|c: char| c == '>' || c.is_whitespace()))
        .unwrap_or("");
    let mut nums = args.split(',').map(|n| {
        n.trim()
            .trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .parse::<i128>()
            .ok()
    });
    let (num, den) = match (nums.next().flatten(), nums.next().flatten()) {
        (Some(n), Some(d)) => (n, d),
        (Some(n), None) => (n, 1),
        _ => return String::new(),
    };
    match (num, den) {
        (1, 1_000_000_000_000_000_000) => "as".into(),
        (1, 1_000_000_000_000_000) => "fs".into(),
        (1, 1_000_000_000_000) => "ps".into(),
        (1, 1_000_000_000) => "ns".into(),
        (1, 1_000_000) => "µs".into(),
        (1, 1000) => "ms".into(),
        (1, 100) => "cs".into(),
        (1, 10) => "ds".into(),
        (1, 1) => "s".into(),
        (60, 1) => "min".into(),
        (3600, 1) => "h".into(),
        (86400, 1) => "d".into(),
        (n, 1) => format!("[{n}]s"),
        (n, d) => format!("[{n}/{d}]s"),
    }
}

#[cfg(test)]
mod tests {
    use super::unit_of;

    #[test]
    fn periods_read_as_cpp20_writes_them() {
        assert_eq!(unit_of("std::ratio<1, 1000>"), "ms");
        assert_eq!(unit_of("std::ratio<1l, 1000000000l>"), "ns");
        assert_eq!(unit_of("std::ratio<1, 1>"), "s");
        assert_eq!(unit_of("std::ratio<3600, 1>"), "h");
        assert_eq!(unit_of("std::ratio<1, 3>"), "[1/3]s");
    }
}
