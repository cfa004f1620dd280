//! Arguments by position, for code without DWARF: at a function's first instruction the System V
//! x86-64 ABI has the first six integer (and pointer) arguments in rdi, rsi, rdx, rcx, r8 and r9.
//! They are offered as `arg0`…`arg5`, 64-bit unsigned integers (as bpftrace's uprobes do), and
//! read like any variable: a DWARF location naming the register, a type made here.
//!
//! Go has its own register ABI (ABIInternal, Go 1.17+): the integer arguments go in rax, rbx,
//! rcx, rdi, rsi, r8, r9, r10, r11, offered as `arg0`…`arg8`. A Go argument wider than a
//! word takes several of them in order: a string is its pointer then its length, a slice its
//! pointer, length and capacity, an interface its type and data words; a float goes in an X
//! register and takes none of these.

use super::scope::{TypeRef, Var};
use super::types::{Type, TypeKind};
use super::{Lang, NO_UNIT, R};
use std::sync::{Arc, OnceLock};

/// DWARF register numbers of rdi, rsi, rdx, rcx, r8, r9 (the x86-64 psABI's numbering).
const ARG_REGS: [u8; 6] = [5, 4, 1, 2, 8, 9];

/// Where the type of `arg0`… is found: no unit has it, [`super::ObjectIndex::type_at`] answers.
pub const ARG_TYPE: TypeRef = TypeRef {
    unit: NO_UNIT,
    offset: gimli::UnitOffset(0),
};

/// DWARF register numbers of Go's integer argument registers: rax, rbx, rcx, rdi, rsi, r8,
/// r9, r10, r11.
const GO_ARG_REGS: [u8; 9] = [0, 3, 2, 5, 4, 8, 9, 10, 11];

/// `arg0`…`arg5`, valid at a function's first instruction.
pub fn arguments() -> Vec<Var> {
    by_registers(&ARG_REGS)
}

/// Go's `arg0`…`arg8`, valid from a function's entry to the end of its prologue.
pub fn go_arguments() -> Vec<Var> {
    by_registers(&GO_ARG_REGS)
}

/// How the arguments of a function without DWARF are read, for messages.
pub fn described(go: bool) -> &'static str {
    if go {
        "Go's register ABI: rax, rbx, rcx, rdi, rsi, r8, r9, r10, r11, as 64-bit integers; a string argument takes two (pointer, length), a slice three (pointer, length, capacity), a float none"
    } else {
        "the System V x86-64 integer argument registers rdi, rsi, rdx, rcx, r8, r9, as 64-bit integers"
    }
}

fn by_registers(regs: &[u8]) -> Vec<Var> {
    regs.iter()
        .enumerate()
        .map(|(i, reg)| {
            // DW_OP_reg0 + n: the value is in register n.
            let op: Arc<[u8]> = Arc::from(&[0x50 + reg][..]);
            Var {
                name: format!("arg{i}"),
                ty: Some(ARG_TYPE),
                location: Some(gimli::AttributeValue::Exprloc(gimli::Expression(R::new(
                    op,
                    gimli::RunTimeEndian::Little,
                )))),
                const_value: None,
                is_param: true,
                decl_line: None,
            }
        })
        .collect()
}

/// The type of an argument by position: a 64-bit unsigned integer.
pub fn arg_type() -> Arc<Type> {
    static T: OnceLock<Arc<Type>> = OnceLock::new();
    T.get_or_init(|| {
        Arc::new(Type {
            name: "u64".into(),
            size: Some(8),
            kind: TypeKind::Base(gimli::DW_ATE_unsigned),
            lang: Lang::Other,
        })
    })
    .clone()
}
