//! The containers of linked nodes, walked as libstdc++ iterates them and bounded:
//! - `map`/`multimap`/`set`/`multiset`: `_M_t._M_impl` holds `_M_header` (an
//!   `_Rb_tree_node_base { _M_color, _M_parent, _M_left, _M_right }` whose `_M_left` is the
//!   leftmost node) and `_M_node_count`; a node is that base followed by the value
//!   (`_Rb_tree_node<V>::_M_storage`), the tree's `_Val` parameter, aligned. In order, as
//!   `_Rb_tree_increment` moves.
//! - `unordered_*`: `_M_h` (a `_Hashtable<_Key, _Value, …>`) starts its singly linked chain at
//!   `_M_before_begin._M_nxt`; a `_Hash_node` is `_M_nxt` then the value; `_M_element_count`.
//! - `list`: `_M_impl._M_node` is the ring's header (`_M_next`, `_M_prev`, `_M_size`); a node
//!   is the two links then the value.
//! - `forward_list`: `_M_impl._M_head._M_next`, null-terminated; a node is the link then the
//!   value. It keeps no count: its length is counted, up to [`MAX_COUNTED`].
//!
//! Each walk stops at the element limit, after as many nodes as the container says it has, and
//! at the first unreadable link; a tree move takes at most [`MAX_TREE_STEPS`] steps. So a
//! corrupt container ends in a truncated value, never in a loop.

use super::{align_of, align_up, Reader};
use crate::frame::Place;
use crate::index::types::Type;
use periscope_core::value::{Entry, Value};
use std::sync::Arc;

/// A red-black tree of n nodes is at most 2·log2(n+1) high: one in-order move climbs or
/// descends at most that far. 128 covers any tree that fits in memory.
const MAX_TREE_STEPS: u32 = 128;
/// A `forward_list`'s nodes counted for its length (8 bytes read each, within the capture's
/// byte budget).
pub(super) const MAX_COUNTED: u64 = 4096;

/// What a walk collected: the elements, and why it stopped early, if it did.
struct Walk {
    items: Vec<(Value, Option<Value>)>,
    broken: Option<String>,
}

impl Reader<'_> {
    /// Renders the element (a map's pair as key and value) of type `vt` at `addr`.
    fn element(&self, addr: u64, vt: &Type, map: bool, depth: u32) -> (Value, Option<Value>) {
        let p = Place::Memory(addr);
        let d = depth.saturating_sub(1);
        if map {
            if let (Some(k), Some(v)) = (vt.member("first"), vt.member("second")) {
                if let (Some(kt), Some(vt2)) = (k.ty, v.ty) {
                    let key = self.render(&Reader::sub_place(&p, k.offset), &self.ty(kt), d);
                    let val = self.render(&Reader::sub_place(&p, v.offset), &self.ty(vt2), d);
                    return (key, Some(val));
                }
            }
        }
        (self.render(&p, vt, d), None)
    }

    /// The collected elements as a map (`map: true`) or a list, with the container's length.
    fn collected(ty: &Type, map: bool, len: u64, walk: Walk) -> Value {
        let tname = Some(ty.name.clone());
        let shown = walk.items.len() as u64;
        let truncated = shown < len || walk.broken.is_some();
        let mut items = Vec::new();
        let mut entries = Vec::new();
        for (k, v) in walk.items {
            match v {
                Some(v) if map => entries.push(Entry { key: k, value: v }),
                _ => items.push(k),
            }
        }
        // A broken walk says where: its last element is the reason.
        if let Some(why) = walk.broken {
            let mark = Value::unavailable(None, why);
            if map {
                entries.push(Entry {
                    key: mark.clone(),
                    value: mark,
                });
            } else {
                items.push(mark);
            }
        }
        if map {
            Value::Map {
                ty: tname,
                len,
                entries,
                truncated,
            }
        } else {
            Value::List {
                ty: tname,
                len,
                cap: None,
                items,
                truncated,
            }
        }
    }

    fn shown_limit(&self, depth: u32, len: u64) -> u64 {
        if depth == 0 {
            0
        } else {
            len.min(self.limits.items as u64)
        }
    }

    pub(super) fn render_tree(
        &self,
        place: &Place,
        ty: &Type,
        map: bool,
        depth: u32,
    ) -> Option<Value> {
        let (t_off, tree) = self.dig(ty, &["_M_t"])?;
        let vt = self.ty(tree.param("_Val")?);
        let (h_off, header) = self.dig(&tree, &["_M_header"])?;
        let (c_off, _) = self.dig(&tree, &["_M_node_count"])?;
        let (parent, left, right) = (
            header.member("_M_parent")?.offset,
            header.member("_M_left")?.offset,
            header.member("_M_right")?.offset,
        );
        let value_at = align_up(header.size?, align_of(self.index, &vt, 0));
        let Some(base) = Reader::address_of(place) else {
            return Some(Value::unavailable(Some(ty.name.clone()), "not in memory"));
        };
        let head = base + t_off + h_off;
        let len = match self.read_u64_at(place, t_off + c_off) {
            Ok(n) => n,
            Err(e) => return Some(Value::unavailable(Some(ty.name.clone()), e)),
        };
        let limit = self.shown_limit(depth, len);
        let link = |node: u64, off: u64| self.read_u64_at(&Place::Memory(node), off);
        let mut walk = Walk {
            items: Vec::new(),
            broken: None,
        };
        // In order from the leftmost node; the header is the end.
        let mut x = match link(head, left) {
            Ok(x) => x,
            Err(e) => return Some(Value::unavailable(Some(ty.name.clone()), e)),
        };
        while (walk.items.len() as u64) < limit && x != head {
            if x == 0 {
                walk.broken = Some("null link in the tree".into());
                break;
            }
            walk.items.push(self.element(x + value_at, &vt, map, depth));
            match self.tree_next(x, head, parent, left, right) {
                Ok(n) => x = n,
                Err(e) => {
                    walk.broken = Some(e);
                    break;
                }
            }
        }
        Some(Self::collected(ty, map, len, walk))
    }

    /// The in-order successor of node `x` (`_Rb_tree_increment`), in at most
    /// [`MAX_TREE_STEPS`] moves.
    fn tree_next(
        &self,
        mut x: u64,
        head: u64,
        parent: u64,
        left: u64,
        right: u64,
    ) -> Result<u64, String> {
        let link = |node: u64, off: u64| self.read_u64_at(&Place::Memory(node), off);
        let too_long = || "the tree walk did not end (corrupt links?)".to_string();
        let r = link(x, right)?;
        if r != 0 {
            x = r;
            for _ in 0..MAX_TREE_STEPS {
                let l = link(x, left)?;
                if l == 0 {
                    return Ok(x);
                }
                x = l;
            }
            return Err(too_long());
        }
        let mut y = link(x, parent)?;
        for _ in 0..MAX_TREE_STEPS {
            if y == 0 {
                return Err("null parent link in the tree".into());
            }
            if x != link(y, right)? || y == head {
                // Past the rightmost node the header is its parent: the end.
                return Ok(if link(x, right)? != y { y } else { x });
            }
            x = y;
            y = link(y, parent)?;
        }
        Err(too_long())
    }

    pub(super) fn render_hashtable(
        &self,
        place: &Place,
        ty: &Type,
        map: bool,
        depth: u32,
    ) -> Option<Value> {
        let (h_off, table) = self.dig(ty, &["_M_h"])?;
        let vt = self.ty(table.param("_Value")?);
        let (b_off, _) = self.dig(&table, &["_M_before_begin", "_M_nxt"])?;
        let (c_off, _) = self.dig(&table, &["_M_element_count"])?;
        let value_at = align_up(8, align_of(self.index, &vt, 0));
        let tname = Some(ty.name.clone());
        let len = match self.read_u64_at(place, h_off + c_off) {
            Ok(n) => n,
            Err(e) => return Some(Value::unavailable(tname, e)),
        };
        let first = match self.read_u64_at(place, h_off + b_off) {
            Ok(p) => p,
            Err(e) => return Some(Value::unavailable(tname, e)),
        };
        let walk = self.chain(first, 0, value_at, self.shown_limit(depth, len), |a| {
            self.element(a, &vt, map, depth)
        });
        Some(Self::collected(ty, map, len, walk))
    }

    /// Follows a null-terminated chain of nodes from `first` (link at `next`, value at
    /// `value_at`), collecting up to `limit` elements.
    fn chain(
        &self,
        first: u64,
        next: u64,
        value_at: u64,
        limit: u64,
        mut element: impl FnMut(u64) -> (Value, Option<Value>),
    ) -> Walk {
        let mut walk = Walk {
            items: Vec::new(),
            broken: None,
        };
        let mut p = first;
        while p != 0 && (walk.items.len() as u64) < limit {
            walk.items.push(element(p + value_at));
            match self.read_u64_at(&Place::Memory(p), next) {
                Ok(n) => p = n,
                Err(e) => {
                    walk.broken = Some(e);
                    break;
                }
            }
        }
        walk
    }

    /// The value type of a `list` or `forward_list`, and where a node's value starts.
    fn node_value(&self, ty: &Type, links: u64) -> Option<(Arc<Type>, u64)> {
        let vt = self.ty(ty.param("_Tp")?);
        let at = align_up(links, align_of(self.index, &vt, 0));
        Some((vt, at))
    }

    pub(super) fn render_linked_list(&self, place: &Place, ty: &Type, depth: u32) -> Option<Value> {
        let (n_off, header) = self.dig(ty, &["_M_impl", "_M_node"])?;
        let (next, _) = self.dig(&header, &["_M_next"])?;
        let (s_off, _) = self.dig(&header, &["_M_size"])?;
        let (vt, value_at) = self.node_value(ty, 16)?;
        let tname = Some(ty.name.clone());
        let Some(base) = Reader::address_of(place) else {
            return Some(Value::unavailable(tname, "not in memory"));
        };
        let head = base + n_off;
        let len = match self.read_u64_at(place, n_off + s_off) {
            Ok(n) => n,
            Err(e) => return Some(Value::unavailable(tname, e)),
        };
        let limit = self.shown_limit(depth, len);
        let mut walk = Walk {
            items: Vec::new(),
            broken: None,
        };
        let mut p = self.read_u64_at(place, n_off + next).ok()?;
        // The ring ends back at its header.
        while p != head && (walk.items.len() as u64) < limit {
            if p == 0 {
                walk.broken = Some("null link in the list".into());
                break;
            }
            walk.items
                .push(self.element(p + value_at, &vt, false, depth));
            match self.read_u64_at(&Place::Memory(p), next) {
                Ok(n) => p = n,
                Err(e) => {
                    walk.broken = Some(e);
                    break;
                }
            }
        }
        Some(Self::collected(ty, false, len, walk))
    }

    /// The first node of a `forward_list`, and the offset of a node's link.
    fn forward_list_head(&self, place: &Place, ty: &Type) -> Result<(u64, u64), String> {
        let (h_off, head) = self
            .dig(ty, &["_M_impl", "_M_head"])
            .ok_or("std::forward_list without _M_head")?;
        let (next, _) = self
            .dig(&head, &["_M_next"])
            .ok_or("std::forward_list without _M_next")?;
        Ok((self.read_u64_at(place, h_off + next)?, next))
    }

    /// A `forward_list`'s length, counted by walking it (it keeps no count), up to
    /// [`MAX_COUNTED`] nodes.
    pub(super) fn forward_list_count(&self, place: &Place, ty: &Type) -> Result<u64, String> {
        let (mut p, next) = self.forward_list_head(place, ty)?;
        let mut n = 0;
        while p != 0 {
            if n >= MAX_COUNTED {
                return Err(format!(
                    "the std::forward_list has more than {MAX_COUNTED} nodes (or a cycle)"
                ));
            }
            n += 1;
            p = self.read_u64_at(&Place::Memory(p), next)?;
        }
        Ok(n)
    }

    pub(super) fn render_forward_list(
        &self,
        place: &Place,
        ty: &Type,
        depth: u32,
    ) -> Option<Value> {
        let tname = Some(ty.name.clone());
        let (first, next) = match self.forward_list_head(place, ty) {
            Ok(h) => h,
            Err(e) => return Some(Value::unavailable(tname, e)),
        };
        let (vt, value_at) = self.node_value(ty, 8)?;
        let limit = if depth == 0 {
            0
        } else {
            self.limits.items as u64
        };
        let walk = self.chain(first, next, value_at, limit, |a| {
            self.element(a, &vt, false, depth)
        });
        // Its length: what was walked when the walk reached its end, else what a count finds;
        // a list too long to count shows what was walked, cut.
        let walked = walk.items.len() as u64;
        let len = if walked < limit && walk.broken.is_none() {
            walked
        } else {
            self.forward_list_count(place, ty).unwrap_or(walked + 1)
        };
        Some(Self::collected(ty, false, len, walk))
    }
}
