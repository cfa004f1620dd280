//! A stopped thread's frame: its registers, its CFA (from the CFI), and the places where DWARF
//! says its variables live.

use crate::index::scope::Var;
use crate::index::{ObjectIndex, R};
use crate::process::{dwarf_reg, Memory, Regs};
use crate::target::Target;
use gimli::{EvaluationResult, Location, Reader as _};

/// Where a value is: in target memory, or already in hand (registers, constants, pieces).
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    Memory(u64),
    Bytes(Vec<u8>),
    Unavailable(String),
    /// A pointer the compiler optimized away (`DW_OP_implicit_pointer`): its own value is
    /// gone, but what it pointed to is known, at this place.
    Implicit(Box<Place>),
}

impl Place {
    /// What a DWARF expression computed, as one word: an address it left on the stack (a
    /// frame base, a call value), or the bytes of a value, zero-extended.
    pub fn word(self) -> Result<u64, String> {
        match self {
            Place::Memory(v) => Ok(v),
            Place::Bytes(b) => {
                let mut w = [0u8; 8];
                let n = b.len().min(8);
                w[..n].copy_from_slice(&b[..n]);
                Ok(u64::from_le_bytes(w))
            }
            Place::Unavailable(why) => Err(why),
            Place::Implicit(_) => Err(IMPLICIT_POINTER.into()),
        }
    }
}

/// The message for reading the value of an optimized-away pointer itself.
pub const IMPLICIT_POINTER: &str =
    "the pointer itself was optimized away; only what it points to is known";

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
    /// The process's objects, to find this frame's caller when a value is only known where the
    /// caller passed it (`DW_OP_entry_value`, `DW_OP_GNU_parameter_ref`). `None`: not looked for.
    pub target: Option<&'a Target>,
    /// The unnamed first parameter of the function at this frame: an `async fn`'s state
    /// machine, where its locals saved across an `.await` are ([`crate::coroutine`]).
    pub env_param: Option<&'a Var>,
}

/// What an entry value asks the caller for.
#[derive(Debug, Clone, Copy)]
enum Argument {
    /// The argument passed in this register (`DW_OP_entry_value(DW_OP_regN)`).
    Register(u16),
    /// The argument for this parameter DIE (`DW_OP_GNU_parameter_ref`), a .debug_info offset.
    Parameter(usize),
}

/// DWARF numbers of the registers a call may clobber (System V x86-64): rax, rdx, rcx, rsi,
/// rdi, r8–r11.
const CALLER_SAVED: [u16; 9] = [0, 1, 2, 4, 5, 8, 9, 10, 11];

/// The location expression in force at file address `pc`: the attribute's own, or the
/// location-list entry covering `pc` (`None`: the variable has no location there).
pub(crate) fn expression_at(
    index: &crate::index::ObjectIndex,
    unit: u32,
    attr: &gimli::AttributeValue<R>,
    pc: u64,
) -> Result<Option<gimli::Expression<R>>, String> {
    if let gimli::AttributeValue::Exprloc(e) = attr {
        return Ok(Some(e.clone()));
    }
    let ud = index.units.get(unit as usize).ok_or("no unit")?;
    let offset = index
        .dwarf
        .attr_locations_offset(&ud.unit, attr.clone())
        .map_err(|e| e.to_string())?
        .ok_or("unsupported location form")?;
    let mut iter = index
        .dwarf
        .locations(&ud.unit, offset)
        .map_err(|e| e.to_string())?;
    while let Ok(Some(entry)) = iter.next() {
        if pc >= entry.range.begin && pc < entry.range.end {
            return Ok(Some(entry.data));
        }
    }
    Ok(None)
}

/// The value type of the base type DIE at `off` in `unit`, for the typed DWARF stack
/// (`DW_OP_convert`, `DW_OP_regval_type`, `DW_OP_deref_type`, `DW_OP_const_type`).
pub(crate) fn value_type(
    index: &crate::index::ObjectIndex,
    unit: u32,
    off: gimli::UnitOffset<usize>,
) -> Option<gimli::ValueType> {
    if off.0 == 0 {
        return Some(gimli::ValueType::Generic);
    }
    let ud = index.units.get(unit as usize)?;
    let entry = ud.unit.entry(off).ok()?;
    if entry.tag() != gimli::DW_TAG_base_type {
        return None;
    }
    let encoding = match entry.attr_value(gimli::DW_AT_encoding)? {
        gimli::AttributeValue::Encoding(e) => e,
        _ => return None,
    };
    let size = entry.attr_value(gimli::DW_AT_byte_size)?.udata_value()?;
    gimli::ValueType::from_encoding(encoding, size)
}

/// Bounds evaluation of one DWARF expression (a malformed one must not spin).
const MAX_EVAL_STEPS: usize = 64;

impl<'a> Frame<'a> {
    /// The top frame of a thread stopped at a probe site, reading memory through `mem` (the
    /// target's, or a replay copy's).
    pub fn at_site(
        target: &'a Target,
        site: &'a crate::target::Site,
        mem: &'a Memory,
        regs: Regs,
        tid: i32,
        cfa: Option<u64>,
    ) -> Frame<'a> {
        let object = &target.objects[site.object];
        Frame {
            index: &object.index,
            bias: object.bias,
            unit: site.unit,
            mem,
            regs,
            tid,
            cfa,
            frame_base: site.visible.frame_base.clone(),
            unknown_regs: 0,
            caller: false,
            target: Some(target),
            env_param: site.visible.env_param.as_ref(),
        }
    }
}

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
        Some(self.index.encoding(self.unit))
    }

    /// The place of a variable at this frame's pc; in an `async fn`'s body, a local the DWARF
    /// has no location for here is read where the state machine saved it.
    pub fn var_place(&self, var: &Var) -> Place {
        let place = self.dwarf_place(var);
        if matches!(&place, Place::Unavailable(why) if why == periscope_core::value::OPTIMIZED_OUT)
        {
            if let Some((saved, _)) = self.saved_local(&var.name) {
                return saved;
            }
        }
        place
    }

    /// A local of an `async fn` saved across an `.await`, by name: its place in the state the
    /// body resumed from, and its type. `None` when this frame is no coroutine body or no state
    /// saves such a local.
    pub fn saved_local(&self, name: &str) -> Option<(Place, crate::index::scope::TypeRef)> {
        let param = self.env_param?;
        if param.name == name {
            return None;
        }
        let env = crate::coroutine::Env::of(self.index, param)?;
        let ty = env.saved_type(self.index, name)?;
        Some((env.saved_place(self, param, name), ty))
    }

    /// The place DWARF gives a variable at this frame's pc.
    fn dwarf_place(&self, var: &Var) -> Place {
        let Some(loc) = &var.location else {
            if let Some(bytes) = &var.const_value {
                return Place::Bytes(bytes.clone());
            }
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
        expression_at(self.index, self.unit, attr, self.file_pc())
    }

    fn frame_base_value(&self) -> Result<u64, String> {
        let attr = self
            .frame_base
            .as_ref()
            .ok_or("the function has no frame base")?;
        let expr = self
            .expression_for(attr)?
            .ok_or("no frame base at this pc")?;
        self.eval_location(expr).word()
    }

    /// Runs a DWARF location expression against this frame.
    pub fn eval_location(&self, expr: gimli::Expression<R>) -> Place {
        self.eval_nested(expr, 0)
    }

    /// `nested`: how many implicit pointers led here (bounded, for malformed debug info).
    fn eval_nested(&self, expr: gimli::Expression<R>, nested: u8) -> Place {
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
                EvaluationResult::RequiresEntryValue(e) => {
                    let Some(reg) = crate::index::callsite::single_register(&e) else {
                        return Place::Unavailable(
                            "DW_OP_entry_value of an expression other than a register is not supported".into(),
                        );
                    };
                    match self.argument(Argument::Register(reg)) {
                        Ok(v) => eval.resume_with_entry_value(gimli::Value::Generic(v)),
                        Err(why) => return Place::Unavailable(why),
                    }
                }
                EvaluationResult::RequiresParameterRef(offset) => {
                    let Some(start) = self.index.units.get(self.unit as usize).map(|u| u.start)
                    else {
                        return Place::Unavailable("no unit".into());
                    };
                    match self.argument(Argument::Parameter(start + offset.0)) {
                        Ok(v) => eval.resume_with_parameter_ref(v),
                        Err(why) => return Place::Unavailable(why),
                    }
                }
                EvaluationResult::RequiresAtLocation(_) => {
                    return Place::Unavailable("DW_OP_call* is not supported".into())
                }
                EvaluationResult::RequiresBaseType(off) => {
                    match value_type(self.index, self.unit, off) {
                        Some(t) => eval.resume_with_base_type(t),
                        None => {
                            return Place::Unavailable(
                                "a typed DWARF operation names a type that is not a base type"
                                    .into(),
                            )
                        }
                    }
                }
                EvaluationResult::RequiresIndexedAddress { .. } => {
                    return Place::Unavailable("DW_OP_addrx is not supported".into())
                }
                _ => return Place::Unavailable("a WebAssembly location is not supported".into()),
            };
        }
        let pieces = eval.result();
        self.assemble(pieces, nested)
    }

    fn assemble(&self, pieces: Vec<gimli::Piece<R>>, nested: u8) -> Place {
        if pieces.len() == 1 && pieces[0].size_in_bits.is_none() {
            return self.piece_place(&pieces[0].location, 8, nested);
        }
        let mut bytes = Vec::new();
        for p in &pieces {
            let size = p.size_in_bits.map(|b| b.div_ceil(8) as usize).unwrap_or(8);
            match self.piece_place(&p.location, size, nested) {
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
                Place::Implicit(_) => {
                    return Place::Unavailable(format!("a piece of it is {IMPLICIT_POINTER}"))
                }
            }
        }
        Place::Bytes(bytes)
    }

    fn piece_place(&self, loc: &Location<R>, size: usize, nested: u8) -> Place {
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
            Location::ImplicitPointer { value, byte_offset } => {
                match self.implicit_target(value.0, *byte_offset, nested) {
                    Place::Unavailable(why) => Place::Unavailable(why),
                    target => Place::Implicit(Box::new(target)),
                }
            }
        }
    }

    /// Where the variable an implicit pointer points into is, at this pc, `byte_offset` in:
    /// the DIE at .debug_info offset `die` (a variable of this function, usually) read with its
    /// own location or constant value.
    fn implicit_target(&self, die: usize, byte_offset: i64, nested: u8) -> Place {
        if nested >= 4 {
            return Place::Unavailable("implicit pointers nested too deep".into());
        }
        let Some((unit, ud)) = self
            .index
            .units
            .iter()
            .enumerate()
            .rev()
            .find(|(_, u)| u.start <= die)
        else {
            return Place::Unavailable("an implicit pointer to no known variable".into());
        };
        let Ok(entry) = ud.unit.entry(gimli::UnitOffset(die - ud.start)) else {
            return Place::Unavailable("an implicit pointer to no known variable".into());
        };
        let frame = Frame {
            unit: unit as u32,
            frame_base: self.frame_base.clone(),
            regs: self.regs,
            target: self.target,
            ..*self
        };
        let target = match entry.attr_value(gimli::DW_AT_location) {
            Some(loc) => match frame.expression_for(&loc) {
                Ok(Some(expr)) => frame.eval_nested(expr, nested + 1),
                Ok(None) => Place::Unavailable(periscope_core::value::OPTIMIZED_OUT.into()),
                Err(e) => Place::Unavailable(e),
            },
            None => match entry.attr_value(gimli::DW_AT_const_value) {
                Some(gimli::AttributeValue::Block(b)) => {
                    Place::Bytes(b.to_slice().map(|c| c.to_vec()).unwrap_or_default())
                }
                _ => Place::Unavailable(periscope_core::value::OPTIMIZED_OUT.into()),
            },
        };
        crate::values::Reader::sub_place(&target, byte_offset as u64)
    }

    /// The value an argument had at the call into this frame, read where the caller passed it:
    /// the caller's `DW_AT_call_value` for it, evaluated in the caller's frame with the
    /// registers the unwinder recovered. Registers a call may clobber are taken from this
    /// frame only while no instruction before the pc wrote them (at the function's entry they
    /// still hold what the caller set); otherwise they are unknown, never guessed.
    fn argument(&self, wanted: Argument) -> Result<u64, String> {
        let target = self
            .target
            .ok_or("the value is only known at the call site (entry value)")?;
        if self.caller {
            return Err("entry values are read for the innermost frame only".into());
        }
        let frames = crate::unwind::unwind(target, self.mem, &self.regs, 2);
        let caller = frames.get(1).ok_or(
            "the value is only known at the call site, and the caller could not be unwound",
        )?;
        let ret = caller.pc();
        let (_, obj) = target
            .object_at(ret.wrapping_sub(1))
            .ok_or("the caller is in no known object")?;
        let ret_file = ret.wrapping_sub(obj.bias);
        let params = obj.index.call_site_params(ret_file);
        let param = params
            .iter()
            .find(|p| match wanted {
                Argument::Register(r) => p.register == Some(r),
                Argument::Parameter(d) => p.parameter == Some(d),
            })
            .ok_or("the value is only known at the call site, which does not record it")?;
        let mut regs = caller.regs;
        let mut unknown = caller.unknown;
        let kept = self.untouched_since_entry();
        for r in CALLER_SAVED {
            if kept & (1 << r) != 0 {
                if let Some(v) = dwarf_reg(&self.regs, r) {
                    crate::process::set_dwarf_reg(&mut regs, r, v);
                    unknown &= !(1 << r);
                }
            }
        }
        let unit = obj
            .index
            .unit_at(ret_file.wrapping_sub(1))
            .ok_or("the caller has no debug info")?;
        let frame_base = obj
            .index
            .scopes(unit)
            .ok()
            .and_then(|s| s.visible_at(ret_file.wrapping_sub(1)))
            .and_then(|v| v.frame_base);
        let frame = Frame {
            index: &obj.index,
            bias: obj.bias,
            unit,
            mem: self.mem,
            regs,
            tid: self.tid,
            cfa: caller.cfa,
            frame_base,
            unknown_regs: unknown,
            caller: true,
            target: None,
            env_param: None,
        };
        // A call value is a computed value: the stack's top is the argument itself.
        frame
            .eval_location(param.value.clone())
            .word()
            .map_err(|why| format!("at the call site: {why}"))
    }

    /// Bit n set: caller-saved DWARF register n still holds its value from the function's
    /// entry, because the straight-line code from the entry to the pc never writes it.
    fn untouched_since_entry(&self) -> u64 {
        use iced_x86::{Decoder, DecoderOptions, FlowControl, InstructionInfoFactory};
        let pc = self.file_pc();
        let Some(f) = self.index.function_at(pc) else {
            return 0;
        };
        let len = pc.wrapping_sub(f.low_pc);
        if len > 256 {
            return 0;
        }
        let mut code = vec![0u8; len as usize];
        if self
            .mem
            .read(f.low_pc.wrapping_add(self.bias), &mut code)
            .is_err()
        {
            return 0;
        }
        let mut all: u64 = CALLER_SAVED.iter().fold(0, |m, r| m | (1 << r));
        let mut decoder = Decoder::with_ip(64, &code, f.low_pc, DecoderOptions::NONE);
        let mut info = InstructionInfoFactory::new();
        while decoder.can_decode() {
            let i = decoder.decode();
            // A breakpoint of ours or a branch: the path from the entry is not known.
            if i.is_invalid() || code.get((i.ip() - f.low_pc) as usize) == Some(&0xcc) {
                return 0;
            }
            if i.flow_control() != FlowControl::Next {
                return 0;
            }
            for used in info.info(&i).used_registers() {
                if matches!(
                    used.access(),
                    iced_x86::OpAccess::Read | iced_x86::OpAccess::CondRead
                ) {
                    continue;
                }
                let caller_saved = crate::process::dwarf_number(used.register().full_register())
                    .filter(|r| CALLER_SAVED.contains(r));
                if let Some(r) = caller_saved {
                    all &= !(1 << r);
                }
            }
        }
        all
    }
}
