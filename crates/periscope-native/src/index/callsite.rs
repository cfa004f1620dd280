//! Call sites (`DW_TAG_call_site`, and GCC's older `DW_TAG_GNU_call_site`), so a callee's
//! parameter that optimized code no longer keeps can be read where the caller passed it: the
//! value `DW_OP_entry_value` and `DW_OP_GNU_parameter_ref` ask for is the caller's
//! `DW_AT_call_value`, evaluated in the caller's frame (how gdb prints parameters of IPA clones
//! such as `rank.isra.0`).

use super::{ObjectIndex, R};
use gimli::Reader as _;
use std::collections::HashMap;
use std::sync::Arc;

/// One `DW_TAG_call_site_parameter`.
#[derive(Debug, Clone)]
pub struct CallSiteParam {
    /// The register the argument was passed in (`DW_AT_location` = `DW_OP_regN`).
    pub register: Option<u16>,
    /// The callee's parameter DIE it is for (`DW_AT_call_parameter`), as a .debug_info offset.
    pub parameter: Option<usize>,
    /// `DW_AT_call_value`: evaluated in the caller's frame, it gives the argument's value.
    pub value: gimli::Expression<R>,
}

/// Return address (file address) → the parameters passed at that call.
pub type UnitCallSites = HashMap<u64, Vec<CallSiteParam>>;

impl ObjectIndex {
    /// The parameters of the call that returns to `return_pc` (a file address), if the debug
    /// info describes that call.
    pub fn call_site_params(&self, return_pc: u64) -> Vec<CallSiteParam> {
        let Some(unit) = self.unit_at(return_pc.wrapping_sub(1)) else {
            return Vec::new();
        };
        let sites = {
            let mut cache = self.call_sites.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .entry(unit)
                .or_insert_with(|| Arc::new(self.parse_call_sites(unit)))
                .clone()
        };
        sites.get(&return_pc).cloned().unwrap_or_default()
    }

    fn parse_call_sites(&self, unit: u32) -> UnitCallSites {
        let mut out = UnitCallSites::new();
        let Some(ud) = self.units.get(unit as usize) else {
            return out;
        };
        let u = &ud.unit;
        let mut entries = u.entries();
        // The return address of the call site being read, while its parameters follow.
        let mut current: Option<(isize, u64)> = None;
        while let Ok(Some(_)) = entries.next_dfs() {
            let depth = entries.depth();
            let Some(entry) = entries.current() else {
                break;
            };
            if current.is_some_and(|(d, _)| depth <= d) {
                current = None;
            }
            match entry.tag() {
                gimli::DW_TAG_call_site | gimli::DW_TAG_GNU_call_site => {
                    let pc = entry
                        .attr_value(gimli::DW_AT_call_return_pc)
                        .or_else(|| entry.attr_value(gimli::DW_AT_low_pc));
                    let pc = match pc {
                        Some(gimli::AttributeValue::Addr(a)) => Some(a),
                        Some(gimli::AttributeValue::DebugAddrIndex(i)) => {
                            self.dwarf.address(u, i).ok()
                        }
                        _ => None,
                    };
                    current = pc.map(|pc| (depth, pc));
                }
                gimli::DW_TAG_call_site_parameter | gimli::DW_TAG_GNU_call_site_parameter => {
                    let Some((_, pc)) = current else { continue };
                    let value = entry
                        .attr_value(gimli::DW_AT_call_value)
                        .or_else(|| entry.attr_value(gimli::DW_AT_GNU_call_site_value));
                    let Some(gimli::AttributeValue::Exprloc(value)) = value else {
                        continue;
                    };
                    let register = match entry.attr_value(gimli::DW_AT_location) {
                        Some(gimli::AttributeValue::Exprloc(e)) => single_register(&e),
                        _ => None,
                    };
                    let parameter = entry
                        .attr_value(gimli::DW_AT_call_parameter)
                        .or_else(|| entry.attr_value(gimli::DW_AT_abstract_origin))
                        .and_then(|r| self.global_offset(unit, r));
                    out.entry(pc).or_default().push(CallSiteParam {
                        register,
                        parameter,
                        value,
                    });
                }
                _ => {}
            }
        }
        out
    }

    /// A DIE reference as an offset in .debug_info, comparable across units.
    pub fn global_offset(&self, unit: u32, r: gimli::AttributeValue<R>) -> Option<usize> {
        match r {
            gimli::AttributeValue::UnitRef(o) => Some(self.units.get(unit as usize)?.start + o.0),
            gimli::AttributeValue::DebugInfoRef(o) => Some(o.0),
            _ => None,
        }
    }
}

/// `DW_OP_regN` (or `DW_OP_regx N`) alone: the register it names.
pub fn single_register(e: &gimli::Expression<R>) -> Option<u16> {
    let mut r = e.0.clone();
    let op = r.read_u8().ok()?;
    let reg = match op {
        0x50..=0x6f => u16::from(op - 0x50),
        0x90 => u16::try_from(r.read_uleb128().ok()?).ok()?,
        _ => return None,
    };
    r.is_empty().then_some(reg)
}
