//! Rust std types rendered the way users think of them: `&str`/`String` as strings, `Vec` and
//! slices as lists, smart pointers and cells see-through,
//! `VecDeque` as a list, `HashMap`/`BTreeMap` as maps, the sets as lists.
//!
//! Every layout fact about std lives here, found by field names (never positions), so a rustc
//! release that moves fields only needs this file changed. What was checked against rustc 1.95:
//! - `Rc<T>` → `ptr.pointer: *const RcInner<T> { strong, weak, value }`; `Arc<T>` →
//!   `ArcInner<T> { strong, weak, data }`.
//! - `VecDeque<T> { head, len, buf: RawVec }`, element i at `(head + i) % cap`.
//! - hashbrown `RawTableInner { bucket_mask, ctrl, growth_left, items }`: slot i is full when
//!   `ctrl[i] & 0x80 == 0`, and its element sits at `ctrl - (i + 1) * size_of::<T>()`.
//! - `BTreeMap { root: Option<NodeRef { height, node }>, length }`, nodes
//!   `LeafNode { parent, parent_idx, len: u16, keys: [MaybeUninit<K>; B], vals }`, internal nodes
//!   the same leaf followed by `edges: [*mut LeafNode; B + 1]`.

use crate::frame::Place;
use crate::index::scope::TypeRef;
use crate::index::types::{Type, TypeKind};
use crate::values::Reader;
use periscope_core::value::{Entry, Value};

/// Bounds a hash table's control bytes read at once (a corrupt bucket mask must not make us read
/// gigabytes).
const MAX_BUCKETS: u64 = 1 << 16;
/// Bounds a B-tree walk, whatever the tree's `length` claims.
const MAX_BTREE_DEPTH: u32 = 32;

/// The last path segment of a type's name before its generics: `alloc::rc::Rc<T>` → `Rc`.
fn kind_of(name: &str) -> &str {
    let head = name.split('<').next().unwrap_or(name);
    head.rsplit("::").next().unwrap_or(head)
}

/// Offset and pointee type of the first pointer inside a (nested) struct, such as RawVec's
/// data pointer, whose nesting (`RawVecInner`, `Unique`, `NonNull`) changes between rustc
/// versions. Fields named like pointers are tried before the others (`cap`, `alloc`). The
/// reader and the kernel engine's capture plans both find it here.
pub(crate) fn first_typed_pointer(
    index: &crate::index::ObjectIndex,
    ty: &Type,
    base: u64,
    level: u32,
) -> Option<(u64, Option<TypeRef>)> {
    if level > 8 {
        return None;
    }
    match &ty.kind {
        TypeKind::Pointer { target } => Some((base, *target)),
        TypeKind::Struct { members, .. } => {
            const PREFERRED: [&str; 3] = ["ptr", "pointer", "inner"];
            let preferred = members
                .iter()
                .filter(|m| PREFERRED.contains(&m.name.as_str()));
            let others = members
                .iter()
                .filter(|m| !PREFERRED.contains(&m.name.as_str()));
            preferred.chain(others).find_map(|m| {
                let t = m.ty?;
                let mt = index.type_at(t.unit, t.offset);
                first_typed_pointer(index, &mt, base + m.offset, level + 1)
            })
        }
        _ => None,
    }
}

impl Reader<'_> {
    /// Renders a std type specially, or `None` to fall back to the generic renderer.
    pub(crate) fn render_rust_special(
        &self,
        place: &Place,
        ty: &Type,
        depth: u32,
        hops: u32,
    ) -> Option<Value> {
        if let Some(v) = self.render_strings_and_slices(place, ty, depth) {
            return Some(v);
        }
        let name = ty.name.as_str();
        match (kind_of(name), &ty.kind) {
            // Smart pointers are seen through, at their own depth (no level of their own); at
            // the depth limit, as any pointer, they show no more than themselves.
            ("Box", TypeKind::Pointer { target: Some(t) }) if depth > 0 => {
                let addr = self.read_u64_at(place, 0).ok()?;
                if addr == 0 {
                    return None;
                }
                self.render_pointee(&Place::Memory(addr), &self.ty(*t), depth, hops)
            }
            ("Rc" | "Arc", TypeKind::Struct { .. }) if depth > 0 => {
                self.render_shared(place, ty, depth, hops)
            }
            (
                "Cell" | "UnsafeCell" | "RefCell" | "SyncUnsafeCell" | "ManuallyDrop"
                | "MaybeDangling" | "MaybeUninit" | "Mutex" | "RwLock",
                TypeKind::Struct { .. },
            ) => {
                let inner = ty
                    .member("value")
                    .or_else(|| ty.member("data"))
                    .or_else(|| ty.member("__0"))?;
                let it = self.ty(inner.ty?);
                Some(self.render(&Reader::sub_place(place, inner.offset), &it, depth))
            }
            ("VecDeque", TypeKind::Struct { .. }) => self.render_vecdeque(place, ty, depth),
            ("HashMap" | "HashSet", TypeKind::Struct { .. }) => self.render_hash(place, ty, depth),
            ("BTreeMap" | "BTreeSet", TypeKind::Struct { .. }) => {
                self.render_btree(place, ty, depth)
            }
            _ => None,
        }
    }

    fn render_shared(&self, place: &Place, ty: &Type, depth: u32, hops: u32) -> Option<Value> {
        let (off, target) = self.find_typed_pointer(ty, 0, 0)?;
        let addr = self.read_u64_at(place, off).ok()?;
        let inner_ty = self.ty(target?);
        let field = inner_ty
            .member("value")
            .or_else(|| inner_ty.member("data"))?;
        self.render_pointee(
            &Place::Memory(addr + field.offset),
            &self.ty(field.ty?),
            depth,
            hops,
        )
    }

    /// `&str`, `String`, `Vec<T>` and `&[T]`: strings and lists.
    fn render_strings_and_slices(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let name = ty.name.as_str();
        let tname = Some(name.to_string());
        if name == "&str" || name == "&mut str" || name == "*const str" {
            let (ptr, len) = self.rust_slice_parts(place, ty)?;
            return Some(self.string_at(ptr, len, tname));
        }
        if name == "alloc::string::String" || name == "String" {
            let (ptr, len) = self.rust_vec_parts(place, ty)?;
            return Some(self.string_at(ptr, len, tname));
        }
        if name.starts_with("alloc::vec::Vec<") || name.starts_with("Vec<") {
            let (ptr, len) = self.rust_vec_parts(place, ty)?;
            let et = self.ty(ty.param("T")?);
            return Some(self.list_at(ptr, len, ty, &et, depth));
        }
        if (name.starts_with("&[") || name.starts_with("&mut [")) && name.ends_with(']') {
            let (ptr, len) = self.rust_slice_parts(place, ty)?;
            let et = match self.ty(ty.member("data_ptr")?.ty?).kind {
                TypeKind::Pointer { target: Some(t) } => self.ty(t),
                _ => return None,
            };
            return Some(self.list_at(ptr, len, ty, &et, depth));
        }
        None
    }

    /// `len` elements at `ptr`, unless the length read from the target is implausible.
    fn list_at(&self, ptr: u64, len: u64, ty: &Type, et: &Type, depth: u32) -> Value {
        if len > 1 << 40 {
            return Value::unavailable(Some(ty.name.clone()), format!("implausible length {len}"));
        }
        self.render_list(&Place::Memory(ptr), ty.name.clone(), et, len, depth)
    }

    /// (data pointer, length) of a Rust fat pointer to a slice or str.
    pub fn rust_slice_parts(&self, place: &Place, ty: &Type) -> Option<(u64, u64)> {
        let ptr = ty.member("data_ptr")?;
        let len = ty.member("length")?;
        Some((
            self.read_u64_at(place, ptr.offset).ok()?,
            self.read_u64_at(place, len.offset).ok()?,
        ))
    }

    /// (buffer pointer, length) of a `Vec` or `String` (`String { vec: Vec<u8> }`).
    pub fn rust_vec_parts(&self, place: &Place, ty: &Type) -> Option<(u64, u64)> {
        if let Some(vec) = ty.member("vec") {
            return self.rust_vec_parts(&Reader::sub_place(place, vec.offset), &self.ty(vec.ty?));
        }
        let len = self.read_u64_at(place, ty.member("len")?.offset).ok()?;
        let buf = ty.member("buf")?;
        let (ptr_off, _) = self.find_typed_pointer(&self.ty(buf.ty?), buf.offset, 0)?;
        Some((self.read_u64_at(place, ptr_off).ok()?, len))
    }

    /// Offset and pointee type of the first pointer inside a (nested) struct (see
    /// [`first_typed_pointer`]).
    fn find_typed_pointer(
        &self,
        ty: &Type,
        base: u64,
        level: u32,
    ) -> Option<(u64, Option<TypeRef>)> {
        first_typed_pointer(self.index, ty, base, level)
    }

    /// The offset of a member found by name anywhere below `ty` (depth-first, base classes
    /// included).
    pub(crate) fn find_member(
        &self,
        ty: &Type,
        name: &str,
        base: u64,
        level: u32,
    ) -> Option<(u64, TypeRef)> {
        self.find_member_where(ty, &|m, _| m.name == name, base, level)
    }

    /// The first member, depth-first below `ty`, that `pred` accepts (given the member and its
    /// type), with its offset from `ty`'s start.
    fn find_member_where(
        &self,
        ty: &Type,
        pred: &dyn Fn(&crate::index::types::Member, &Type) -> bool,
        base: u64,
        level: u32,
    ) -> Option<(u64, TypeRef)> {
        if level > 8 {
            return None;
        }
        let TypeKind::Struct { members, .. } = &ty.kind else {
            return None;
        };
        for m in members {
            let Some(t) = m.ty else { continue };
            let mt = self.ty(t);
            if pred(m, &mt) {
                return Some((base + m.offset, t));
            }
        }
        members
            .iter()
            .find_map(|m| self.find_member_where(&self.ty(m.ty?), pred, base + m.offset, level + 1))
    }

    fn read_usize_member(&self, place: &Place, ty: &Type, name: &str) -> Option<u64> {
        let (off, _) = self.find_member(ty, name, 0, 0)?;
        self.read_u64_at(place, off).ok()
    }

    fn render_vecdeque(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let et = self.ty(ty.param("T")?);
        let head = self.read_usize_member(place, ty, "head")?;
        let len = self.read_usize_member(place, ty, "len")?;
        let cap = self.read_usize_member(place, ty, "cap")?;
        let buf = ty.member("buf")?;
        let (poff, _) = self.find_typed_pointer(&self.ty(buf.ty?), buf.offset, 0)?;
        let ptr = self.read_u64_at(place, poff).ok()?;
        if cap == 0 || len > cap {
            return Some(Value::List {
                ty: Some(ty.name.clone()),
                cap: None,
                len,
                items: vec![],
                truncated: len > 0,
            });
        }
        let stride = et.size.unwrap_or(0);
        let shown = if depth == 0 {
            0
        } else {
            len.min(self.limits.items as u64)
        };
        let items = (0..shown)
            .map(|i| {
                self.render(
                    &Place::Memory(ptr + ((head + i) % cap) * stride),
                    &et,
                    depth - 1,
                )
            })
            .collect::<Vec<_>>();
        Some(Value::List {
            ty: Some(ty.name.clone()),
            cap: None,
            len,
            truncated: (items.len() as u64) < len,
            items,
        })
    }

    fn render_hash(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let is_set = kind_of(&ty.name) == "HashSet";
        // Down to hashbrown's RawTable<T>, whose T is the element: (K, V), or (K, ()) for sets.
        let (raw_off, raw_ref) = self.find_member_of_kind(ty, "RawTable", 0, 0)?;
        let raw = self.ty(raw_ref);
        let elem = self.ty(raw.param("T")?);
        let raw_place = Reader::sub_place(place, raw_off);
        let mask = self.read_usize_member(&raw_place, &raw, "bucket_mask")?;
        let items = self.read_usize_member(&raw_place, &raw, "items")?;
        let (ctrl_off, _) = self.find_member(&raw, "ctrl", 0, 0)?;
        let ctrl = self.read_u64_at(&raw_place, ctrl_off).ok()?;
        let buckets = mask.checked_add(1)?;
        let tname = Some(ty.name.clone());
        if buckets > MAX_BUCKETS || !buckets.is_power_of_two() || items > buckets {
            return Some(Value::unavailable(
                tname,
                format!("implausible hash table ({buckets} buckets, {items} items)"),
            ));
        }
        let stride = elem.size.unwrap_or(0);
        let (k, v) = (elem.member("__0")?, elem.member("__1"));
        let kt = self.ty(k.ty?);
        let vt = v.and_then(|v| v.ty).map(|t| self.ty(t));
        let limit = if depth == 0 {
            0
        } else {
            self.limits.items as u64
        };
        let ctrl_bytes = if items == 0 {
            Vec::new()
        } else {
            self.bytes(&Place::Memory(ctrl), 0, buckets as usize).ok()?
        };
        let mut keys = Vec::new();
        let mut entries = Vec::new();
        for (i, c) in ctrl_bytes.iter().enumerate() {
            if c & 0x80 != 0 {
                continue;
            }
            if (keys.len() + entries.len()) as u64 >= limit {
                break;
            }
            let at = Place::Memory(ctrl.wrapping_sub((i as u64 + 1) * stride));
            let key = self.render(&Reader::sub_place(&at, k.offset), &kt, depth - 1);
            match (&vt, v, is_set) {
                (Some(vt), Some(v), false) => entries.push(Entry {
                    key,
                    value: self.render(&Reader::sub_place(&at, v.offset), vt, depth - 1),
                }),
                _ => keys.push(key),
            }
        }
        Some(if is_set {
            Value::List {
                ty: tname,
                cap: None,
                len: items,
                truncated: (keys.len() as u64) < items,
                items: keys,
            }
        } else {
            Value::Map {
                ty: tname,
                len: items,
                truncated: (entries.len() as u64) < items,
                entries,
            }
        })
    }

    /// A member, at any depth, whose type's kind (last path segment) is `kind`.
    fn find_member_of_kind(
        &self,
        ty: &Type,
        kind: &str,
        base: u64,
        level: u32,
    ) -> Option<(u64, TypeRef)> {
        self.find_member_where(ty, &|_, t| kind_of(&t.name) == kind, base, level)
    }

    fn render_btree(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let is_set = kind_of(&ty.name) == "BTreeSet";
        let (map_off, map_ty) = if is_set {
            let m = ty.member("map")?;
            (m.offset, self.ty(m.ty?))
        } else {
            (0, std::sync::Arc::new(ty.clone()))
        };
        let map_place = Reader::sub_place(place, map_off);
        let length = self.read_usize_member(&map_place, &map_ty, "length")?;
        let tname = Some(ty.name.clone());
        let root = map_ty.member("root")?;
        let root_ty = self.ty(root.ty?);
        let root_place = Reader::sub_place(&map_place, root.offset);
        let TypeKind::Struct {
            variants: Some(vp), ..
        } = &root_ty.kind
        else {
            return None;
        };
        let some = self.active_variant(&root_place, vp)?;
        let empty = |len| Value::Map {
            ty: tname.clone(),
            len,
            entries: vec![],
            truncated: len > 0,
        };
        if some.member.name != "Some" {
            return Some(if is_set {
                Value::List {
                    ty: tname.clone(),
                    cap: None,
                    len: 0,
                    items: vec![],
                    truncated: false,
                }
            } else {
                empty(0)
            });
        }
        // Some(NodeRef { height, node })
        let some_ty = self.ty(some.member.ty?);
        let noderef_m = some_ty.member("__0")?;
        let noderef = self.ty(noderef_m.ty?);
        let nr_place = Reader::sub_place(&root_place, some.member.offset + noderef_m.offset);
        let height = self.read_usize_member(&nr_place, &noderef, "height")?;
        let (node_off, leaf_ref) = self.find_typed_pointer(&noderef, 0, 0)?;
        let node = self.read_u64_at(&nr_place, node_off).ok()?;
        let leaf = self.ty(leaf_ref?);
        let mut walk = BTreeWalk {
            reader: self,
            leaf: &leaf,
            keys: leaf.member("keys")?,
            vals: leaf.member("vals"),
            len: leaf.member("len")?,
            out: Vec::new(),
            limit: if depth == 0 { 0 } else { self.limits.items },
            depth,
        };
        walk.node(node, height.min(MAX_BTREE_DEPTH as u64) as u32);
        let shown = walk.out.len() as u64;
        Some(if is_set {
            Value::List {
                ty: tname,
                cap: None,
                len: length,
                items: walk.out.into_iter().map(|e| e.key).collect(),
                truncated: shown < length,
            }
        } else {
            Value::Map {
                ty: tname,
                len: length,
                entries: walk.out,
                truncated: shown < length,
            }
        })
    }
}

struct BTreeWalk<'r, 'a> {
    reader: &'r Reader<'a>,
    leaf: &'r Type,
    keys: &'r crate::index::types::Member,
    vals: Option<&'r crate::index::types::Member>,
    len: &'r crate::index::types::Member,
    out: Vec<Entry>,
    limit: usize,
    depth: u32,
}

impl BTreeWalk<'_, '_> {
    /// In-order walk: for each key i, the subtree left of it, then the key.
    fn node(&mut self, addr: u64, height: u32) {
        if addr == 0 || self.out.len() >= self.limit {
            return;
        }
        let r = self.reader;
        let Ok(lb) = r.bytes(&Place::Memory(addr), self.len.offset, 2) else {
            return;
        };
        let n = u16::from_le_bytes([lb[0], lb[1]]) as u64;
        let (Some(kt), vt) = (
            self.keys.ty.map(|t| r.ty(t)),
            self.vals.and_then(|v| v.ty).map(|t| r.ty(t)),
        ) else {
            return;
        };
        let TypeKind::Array {
            elem: kelem,
            count: Some(cap),
        } = kt.kind
        else {
            return;
        };
        let n = n.min(cap);
        let ket = r.ty(kelem);
        let vet = vt.as_ref().and_then(|v| match v.kind {
            TypeKind::Array { elem, .. } => Some(r.ty(elem)),
            _ => None,
        });
        // Internal nodes: the leaf part, then `cap + 1` child pointers, 8-aligned.
        let edges = self.leaf.size.unwrap_or(0).div_ceil(8) * 8;
        for i in 0..=n {
            if height > 0 {
                if let Ok(child) = r.read_u64_at(&Place::Memory(addr), edges + i * 8) {
                    self.node(child, height - 1);
                }
            }
            if i == n || self.out.len() >= self.limit {
                break;
            }
            let kstride = ket.size.unwrap_or(0);
            let key = r.render(
                &Place::Memory(addr + self.keys.offset + i * kstride),
                &ket,
                self.depth - 1,
            );
            let value = match (&vet, self.vals) {
                (Some(vet), Some(vals)) => r.render(
                    &Place::Memory(addr + vals.offset + i * vet.size.unwrap_or(0)),
                    vet,
                    self.depth - 1,
                ),
                _ => Value::Unit { ty: None },
            };
            self.out.push(Entry { key, value });
        }
    }
}
