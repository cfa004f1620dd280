//! A stopped thread's frame: its registers, its CFA (from the CFI), and the places where DWARF
//! says its variables live.

use crate::index::scope::Var;
use crate::index::{ObjectIndex, R};
use crate::process::{dwarf_reg, Memory, Regs};
use gimli::{EvaluationResult, Location, Reader as _};

/// How to compute the canonical frame address at one code address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfaRule {
    RegOffset { reg: u16, offset: i64 },
}

impl CfaRule {
    pub fn eval(&self, regs: &Regs) -> Option<u64> {
        match *self {
            CfaRule::RegOffset { reg, offset } => {
                dwarf_reg(regs, reg).map(|v| v.wrapping_add(offset as u64))
            }
        }
    }
}

/// The CFA rule at a file address, from `.eh_frame` or `.debug_frame`. Computed once per probe
/// site, so the per-hit cost is one addition.
pub fn cfa_rule(index: &ObjectIndex, file_pc: u64) -> Option<CfaRule> {
    crate::unwind::rules_at(index, file_pc).map(|(cfa, _)| cfa)
}

/// Where a value is: in target memory, or already in hand (registers, constants, pieces).
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    Memory(u64),
    Bytes(Vec<u8>),
    Unavailable(String),
}

/// One stopped frame, with what is needed to read its variables.
pub struct Frame<'a> {
    pub index: &'a ObjectIndex,
    pub bias: u64,
    pub unit: u32,
    pub mem: &'a Memory,
    pub regs: Regs,
    pub tid: i32,
    pub cfa: Option<u64>,
    pub frame_base: Option<gimli::AttributeValue<R>>,
    /// Bit n set: DWARF register n is not known in this frame (see [`crate::unwind`]).
    pub unknown_regs: u64,
    /// A caller frame: its pc is a return address, so scopes and location lists are looked up
    /// at the call instruction before it.
    pub caller: bool,
}

/// Bounds evaluation of one DWARF expression (a malformed one must not spin).
const MAX_EVAL_STEPS: usize = 64;

impl Frame<'_> {
    pub fn file_pc(&self) -> u64 {
        self.regs
            .rip
            .wrapping_sub(self.bias)
            .wrapping_sub(u64::from(self.caller))
    }

    fn reg(&self, n: u16) -> Option<u64> {
        if n < 64 && self.unknown_regs & (1 << n) != 0 {
            return None;
        }
        dwarf_reg(&self.regs, n)
    }

    fn encoding(&self) -> Option<gimli::Encoding> {
        self.index
            .units
            .get(self.unit as usize)
            .map(|u| u.unit.encoding())
    }

    /// The place of a variable at this frame's pc.
    pub fn var_place(&self, var: &Var) -> Place {
        let Some(loc) = &var.location else {
            return Place::Unavailable(periscope_core::value::OPTIMIZED_OUT.into());
        };
        match self.expression_for(loc) {
            Ok(Some(expr)) => self.eval_location(expr),
            Ok(None) => Place::Unavailable(periscope_core::value::OPTIMIZED_OUT.into()),
            Err(e) => Place::Unavailable(e),
        }
    }

    /// The expression in force at pc: the attribute's own, or the matching location-list entry.
    fn expression_for(
        &self,
        attr: &gimli::AttributeValue<R>,
    ) -> Result<Option<gimli::Expression<R>>, String> {
        if let gimli::AttributeValue::Exprloc(e) = attr {
            return Ok(Some(e.clone()));
        }
        let ud = self.index.units.get(self.unit as usize).ok_or("no unit")?;
        let offset = self
            .index
            .dwarf
            .attr_locations_offset(&ud.unit, attr.clone())
            .map_err(|e| e.to_string())?
            .ok_or("unsupported location form")?;
        let mut iter = self
            .index
            .dwarf
            .locations(&ud.unit, offset)
            .map_err(|e| e.to_string())?;
        let pc = self.file_pc();
        while let Ok(Some(entry)) = iter.next() {
            if pc >= entry.range.begin && pc < entry.range.end {
                return Ok(Some(entry.data));
            }
        }
        Ok(None)
    }

    fn frame_base_value(&self) -> Result<u64, String> {
        let attr = self
            .frame_base
            .as_ref()
            .ok_or("the function has no frame base")?;
        let expr = self
            .expression_for(attr)?
            .ok_or("no frame base at this pc")?;
        match self.eval_location(expr) {
            Place::Memory(a) => Ok(a),
            Place::Bytes(b) if b.len() >= 8 => Ok(u64::from_le_bytes(
                b[..8].try_into().map_err(|_| "bad frame base")?,
            )),
            Place::Bytes(_) => Err("bad frame base".into()),
            Place::Unavailable(r) => Err(r),
        }
    }

    /// Runs a DWARF location expression against this frame.
    pub fn eval_location(&self, expr: gimli::Expression<R>) -> Place {
        let Some(encoding) = self.encoding() else {
            return Place::Unavailable("no unit".into());
        };
        let mut eval = expr.evaluation(encoding);
        let mut result = eval.evaluate();
        for _ in 0..MAX_EVAL_STEPS {
            let r = match result {
                Err(e) => return Place::Unavailable(format!("bad location expression: {e}")),
                Ok(r) => r,
            };
            result = match r {
                EvaluationResult::Complete => break,
                EvaluationResult::RequiresRegister { register, .. } => {
                    match self.reg(register.0) {
                        Some(v) => eval.resume_with_register(gimli::Value::Generic(v)),
                        // A caller-saved register of a caller frame: the value is gone.
                        None if self.caller => {
                            return Place::Unavailable(periscope_core::value::OPTIMIZED_OUT.into())
                        }
                        None => {
                            return Place::Unavailable(format!(
                                "register {} not readable",
                                register.0
                            ))
                        }
                    }
                }
                EvaluationResult::RequiresMemory { address, size, .. } => {
                    let mut buf = [0u8; 8];
                    let n = (size as usize).min(8);
                    if self.mem.read(address, &mut buf[..n]).is_err() {
                        return Place::Unavailable(format!("cannot read memory at {address:#x}"));
                    }
                    eval.resume_with_memory(gimli::Value::Generic(u64::from_le_bytes(buf)))
                }
                EvaluationResult::RequiresFrameBase => match self.frame_base_value() {
                    Ok(fb) => eval.resume_with_frame_base(fb),
                    Err(e) => return Place::Unavailable(e),
                },
                EvaluationResult::RequiresCallFrameCfa => match self.cfa {
                    Some(cfa) => eval.resume_with_call_frame_cfa(cfa),
                    None => {
                        return Place::Unavailable("no call frame information at this pc".into())
                    }
                },
                EvaluationResult::RequiresRelocatedAddress(a) => {
                    eval.resume_with_relocated_address(a.wrapping_add(self.bias))
                }
                EvaluationResult::RequiresTls(offset) => {
                    // x86-64 TLS (variant II): the thread pointer is fs_base.
                    eval.resume_with_tls(self.regs.fs_base.wrapping_add(offset))
                }
                EvaluationResult::RequiresEntryValue(_) => {
                    return Place::Unavailable(periscope_core::value::OPTIMIZED_OUT.into())
                }
                _ => return Place::Unavailable("unsupported location expression".into()),
            };
        }
        let pieces = eval.result();
        self.assemble(pieces)
    }

    fn assemble(&self, pieces: Vec<gimli::Piece<R>>) -> Place {
        if pieces.len() == 1 && pieces[0].size_in_bits.is_none() {
            return self.piece_place(&pieces[0].location, 8);
        }
        let mut bytes = Vec::new();
        for p in &pieces {
            let size = p.size_in_bits.map(|b| b.div_ceil(8) as usize).unwrap_or(8);
            match self.piece_place(&p.location, size) {
                Place::Memory(a) => {
                    let mut b = vec![0u8; size];
                    if self.mem.read(a, &mut b).is_err() {
                        return Place::Unavailable(format!("cannot read memory at {a:#x}"));
                    }
                    bytes.extend(b);
                }
                Place::Bytes(mut b) => {
                    b.resize(size, 0);
                    bytes.extend(b);
                }
                Place::Unavailable(r) => return Place::Unavailable(r),
            }
        }
        Place::Bytes(bytes)
    }

    fn piece_place(&self, loc: &Location<R>, size: usize) -> Place {
        match loc {
            Location::Address { address } => Place::Memory(*address),
            Location::Register { register } => {
                if self.caller && (17..=32).contains(&register.0) {
                    return Place::Unavailable(periscope_core::value::OPTIMIZED_OUT.into());
                }
                if let Some(v) = self.reg(register.0) {
                    return Place::Bytes(v.to_le_bytes().to_vec());
                }
                // xmm0–xmm15 are DWARF registers 17–32.
                if (17..=32).contains(&register.0) {
                    if let Some(fp) = crate::process::getfpregs(self.tid) {
                        let i = (register.0 - 17) as usize * 4;
                        let words = &fp.xmm_space[i..i + 4];
                        let mut b: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                        b.truncate(size.max(8));
                        return Place::Bytes(b);
                    }
                }
                if self.unknown_regs & (1 << register.0.min(63)) != 0 {
                    // A caller-saved register in a caller frame: its value there is gone.
                    return Place::Unavailable(periscope_core::value::OPTIMIZED_OUT.into());
                }
                Place::Unavailable(format!("register {} not readable", register.0))
            }
            Location::Value { value } => {
                let v = match value {
                    gimli::Value::Generic(v) | gimli::Value::U64(v) => *v,
                    gimli::Value::I64(v) => *v as u64,
                    gimli::Value::U32(v) => u64::from(*v),
                    gimli::Value::I32(v) => *v as u64,
                    gimli::Value::F64(f) => f.to_bits(),
                    gimli::Value::F32(f) => u64::from(f.to_bits()),
                    gimli::Value::U8(v) => u64::from(*v),
                    gimli::Value::I8(v) => *v as u64,
                    gimli::Value::U16(v) => u64::from(*v),
                    gimli::Value::I16(v) => *v as u64,
                };
                Place::Bytes(v.to_le_bytes().to_vec())
            }
            Location::Bytes { value } => {
                Place::Bytes(value.to_slice().map(|c| c.to_vec()).unwrap_or_default())
            }
            Location::Empty => Place::Unavailable(periscope_core::value::OPTIMIZED_OUT.into()),
            _ => Place::Unavailable(
                "implicit pointer (the value was optimized into its uses)".into(),
            ),
        }
    }
}
