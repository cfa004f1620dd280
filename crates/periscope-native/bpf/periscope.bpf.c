// SPDX-License-Identifier: GPL-2.0
/*
 * Periscope's in-kernel probe: one uprobe program (and its uretprobe twin for durations) that
 * runs a capture plan per probe site. The site's plan is chosen by the BPF cookie set at attach
 * time; a plan is a short, forward-only program for a small stack machine, compiled in user
 * space from the DWARF at that address (see src/kernel/plan.rs). Nothing here writes the
 * target's memory: every access is bpf_probe_read_user, which faults softly.
 *
 * A hit runs, in order: the condition ops, the rate limit, the hit limit, the capture ops, and
 * sends one record through the ring buffer. Rejected hits cost the uprobe and the condition.
 *
 * Why an interpreter and not generated BPF: the verifier checks this program once; plans are
 * data, so a new probe never loads new code, and the loop is bounded by bpf_loop.
 */
#include <linux/bpf.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>

#define MAX_OPS 128
#define STACK_MASK 7
#define DATA_MAX 2048
#define SLACK 512
#define MAX_READ 256

enum op_code {
	OP_END = 0,
	OP_REG = 1,    /* push DWARF register `arg` */
	OP_CONST = 2,  /* push imm */
	OP_ADDI = 3,   /* top += imm */
	OP_LOAD = 4,   /* top = *(size bytes at top), arg 1: sign-extend */
	OP_DUP = 5,
	OP_SWAP = 6,
	OP_POP = 7,
	OP_BIN = 8,    /* arg: enum bin */
	OP_NOT = 9,
	OP_NEG = 10,
	OP_BOOL = 11,
	OP_JZK = 12,   /* if top == 0 jump to `next`, keeping top */
	OP_JNZK = 13,  /* if top != 0 jump to `next`, keeping top */
	OP_SEXT = 14,  /* sign-extend top from `size` bytes */
	OP_ZEXT = 15,  /* zero-extend top from `size` bytes */
	OP_FORD = 16,  /* float bits of `size` bytes to an integer of the same order */
	OP_CAPM = 17,  /* capture `size` bytes at the address on top (popped) */
	OP_CAPSTR = 18,/* capture a NUL-terminated string of at most `size` bytes */
	OP_CAPBUF = 19,/* pop len, pop addr: capture min(len, size) bytes */
	OP_SLOT = 20,  /* a capture slot starts; it ends at `next` (where an error skips to) */
	OP_PICK = 21,  /* push the entry `arg` below the top (DW_OP_pick; 0 is the top) */
	OP_ROT = 22,   /* DW_OP_rot: the top moves to third, the second and third move up */
};

enum bin {
	B_ADD, B_SUB, B_MUL, B_DIVU, B_DIVS, B_MODU, B_MODS,
	B_EQ, B_NE, B_LTU, B_LEU, B_GTU, B_GEU, B_LTS, B_LES, B_GTS, B_GES,
	B_AND, B_SHR, B_OR, B_XOR, B_SHL, B_SAR,
};

enum err { E_NONE, E_READ, E_DIV0, E_FULL, E_STACK };

struct op {
	__u8 code;
	__u8 arg;
	__u16 next;
	__u32 size;
	__s64 imm;
};

#define PLAN_QUIET 1   /* counters and metrics: no wake-up per record */
#define PLAN_REPEATS 2 /* the probe has several sites: one execution of its line reports once */

struct plan {
	__u32 probe;
	__u16 cond_len;
	__u16 nops;
	__u32 flags;
	__u32 scope;   /* the DIE of the function or inlined call around the site */
	__u64 addr;    /* the site's address (sites of a line are ordered by it) */
	__s64 cfa_off; /* the frame's CFA: DWARF register cfa_reg plus cfa_off */
	__u32 cfa_reg; /* > 16: unknown */
	__u32 pad;
	struct op ops[MAX_OPS];
};

struct probe_state {
	__u64 hits;
	__u64 filtered;
	__u64 errors;
	__u64 rate_dropped;
	__u64 max_hits;      /* 0: none */
	__u64 rate_allowed;  /* hits per window; 0: no limit */
	__u64 rate_window_ns;
	__u64 window_start;
	__u64 window_count;
	/* The overhead budget (see charge()): at most budget_ns of this program's time per
	 * budget_window_ns; 0: none. */
	__u64 budget_ns;
	__u64 budget_window_ns;
	__u64 budget_start;
	__u64 budget_used;
	__u64 busy_ns;   /* all the program's time for the probe, for the tally */
	__u64 paused_at; /* when the budget ran out (ktime); 0: running. Checked first. */
};

enum rec_kind { REC_HIT = 1, REC_ERROR = 2, REC_RETURN = 3 };

struct rec_head {
	__u32 site;
	__u16 kind;
	__u16 err;
	__u32 pid;
	__u32 tid;
	__u64 ktime;
	__u64 value; /* REC_RETURN: nanoseconds; REC_ERROR: the faulting address */
	__u64 regs[17];
	__u32 len;   /* bytes of data */
	__u32 pad;
};

struct region {
	__u64 addr;
	__u16 len;
	__u16 flags; /* 1: a C string (ends at its NUL), 2: the read faulted */
	__u32 pad;
};

struct vm {
	__u64 stack[STACK_MASK + 1];
	__u32 sp;
	__u32 pc;
	__u32 end;
	__u32 slot_end;
	__u32 site;
	__u32 capture;
	__u32 err;
	__u32 pad;
	__u64 fault;
	struct rec_head head;
	__u8 data[DATA_MAX + SLACK];
};

/* What a duration keeps from a call's entry to its return. */
#define ENTRY_DATA 256
struct entry {
	struct rec_head head;
	__u8 data[ENTRY_DATA];
};

struct entry_key {
	__u64 pid_tgid;
	__u32 site;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct plan);
} plans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct probe_state);
} probes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vm);
} vms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct entry_key);
	__type(value, struct entry);
} entries SEC(".maps");

/* A thread's last hit of a probe with several sites (see is_repeat). LRU: threads that
 * are gone make room on their own. */
struct last_key {
	__u32 tid;
	__u32 probe;
};

struct last_hit {
	__u64 addr;
	__u64 cfa;
	__u32 scope;
	__u32 reported;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct last_key);
	__type(value, struct last_hit);
} last_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

static __always_inline struct vm *the_vm(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&vms, &zero);
}

static __always_inline void push(struct vm *vm, __u64 v)
{
	vm->stack[vm->sp & STACK_MASK] = v;
	vm->sp++;
}

static __always_inline __u64 pop(struct vm *vm)
{
	vm->sp--;
	return vm->stack[vm->sp & STACK_MASK];
}

static __always_inline __u64 top(struct vm *vm)
{
	return vm->stack[(vm->sp - 1) & STACK_MASK];
}

static __always_inline void set_top(struct vm *vm, __u64 v)
{
	vm->stack[(vm->sp - 1) & STACK_MASK] = v;
}

static __always_inline __u64 extend(__u64 v, __u32 size, int sign)
{
	if (size >= 8)
		return v;
	__u32 shift = 64 - size * 8;
	if (sign)
		return (__u64)(((__s64)(v << shift)) >> shift);
	return (v << shift) >> shift;
}

/* Appends a region header at the write offset; returns its offset, or -1 when full. */
static __always_inline long region_at(struct vm *vm, __u64 addr)
{
	__u32 off = vm->head.len;
	if (off >= DATA_MAX) {
		vm->err = E_FULL;
		return -1;
	}
	off &= DATA_MAX - 1;
	struct region *r = (struct region *)&vm->data[off];
	r->addr = addr;
	r->len = 0;
	r->flags = 0;
	r->pad = 0;
	return off;
}

/* Reads `n` bytes at `addr` into the record as a region. */
static __always_inline int capture(struct vm *vm, __u64 addr, __u32 n, int cstr)
{
	long at = region_at(vm, addr);
	if (at < 0)
		return -1;
	__u32 off = (__u32)at & (DATA_MAX - 1);
	if (n > MAX_READ)
		n = MAX_READ;
	struct region *r = (struct region *)&vm->data[off];
	long got;
	if (cstr) {
		got = bpf_probe_read_user_str(&vm->data[off + sizeof(struct region)], n & (MAX_READ * 2 - 1), (void *)addr);
		if (got > 0)
			r->flags = 1;
	} else {
		got = bpf_probe_read_user(&vm->data[off + sizeof(struct region)], n & (MAX_READ * 2 - 1), (void *)addr);
		if (got == 0)
			got = n;
	}
	if (got < 0) {
		r->flags = 2;
		vm->head.len = off + sizeof(struct region);
		vm->err = E_READ;
		vm->fault = addr;
		return -1;
	}
	r->len = (__u16)got;
	vm->head.len = off + sizeof(struct region) + ((__u32)got & (MAX_READ * 2 - 1));
	return 0;
}

static __always_inline __u64 binop(struct vm *vm, __u8 op, __u64 a, __u64 b)
{
	switch (op) {
	case B_ADD: return a + b;
	case B_SUB: return a - b;
	case B_MUL: return a * b;
	case B_DIVU: if (!b) { vm->err = E_DIV0; return 0; } return a / b;
	case B_MODU: if (!b) { vm->err = E_DIV0; return 0; } return a % b;
	case B_DIVS:
	case B_MODS: {
		/* Signed division from unsigned (BPF before v4 has none): truncating, as C and
		 * Rust do; the remainder takes the dividend's sign. */
		if (!b) { vm->err = E_DIV0; return 0; }
		int na = (__s64)a < 0, nb = (__s64)b < 0;
		__u64 ua = na ? -a : a, ub = nb ? -b : b;
		if (op == B_DIVS) {
			__u64 q = ua / ub;
			return (na != nb) ? -q : q;
		}
		__u64 r = ua % ub;
		return na ? -r : r;
	}
	case B_EQ: return a == b;
	case B_NE: return a != b;
	case B_LTU: return a < b;
	case B_LEU: return a <= b;
	case B_GTU: return a > b;
	case B_GEU: return a >= b;
	case B_LTS: return (__s64)a < (__s64)b;
	case B_LES: return (__s64)a <= (__s64)b;
	case B_GTS: return (__s64)a > (__s64)b;
	case B_GES: return (__s64)a >= (__s64)b;
	case B_AND: return a & b;
	/* Shifts as DWARF defines them: by 64 or more, all bits are shifted out. */
	case B_SHR: return b > 63 ? 0 : a >> b;
	case B_OR: return a | b;
	case B_XOR: return a ^ b;
	case B_SHL: return b > 63 ? 0 : a << b;
	case B_SAR: return (__u64)((__s64)a >> (b > 63 ? 63 : b));
	}
	return 0;
}

/* One op of the current plan; returns 1 to end the loop. */
static long step(__u32 i, void *unused)
{
	struct vm *vm = the_vm();
	if (!vm)
		return 1;
	__u32 pc = vm->pc;
	if (pc >= vm->end || pc >= MAX_OPS)
		return 1;
	__u32 site = vm->site;
	struct plan *p = bpf_map_lookup_elem(&plans, &site);
	if (!p)
		return 1;
	struct op *o = &p->ops[pc & (MAX_OPS - 1)];
	__u8 code = o->code;
	__u32 size = o->size;
	__u32 next = pc + 1;
	if (vm->sp > STACK_MASK + 1) {
		vm->err = E_STACK;
		return 1;
	}
	switch (code) {
	case OP_END:
		return 1;
	case OP_REG: {
		__u32 r = o->arg;
		if (r > 16)
			r = 16;
		push(vm, vm->head.regs[r & 31]);
		break;
	}
	case OP_CONST:
		push(vm, (__u64)o->imm);
		break;
	case OP_ADDI:
		set_top(vm, top(vm) + (__u64)o->imm);
		break;
	case OP_LOAD: {
		__u64 addr = top(vm);
		__u64 v = 0;
		__u32 n = size > 8 ? 8 : size;
		if (vm->capture) {
			/* Every byte read while capturing goes into the record, so user space
			 * renders from exactly what the kernel saw. */
			long at = region_at(vm, addr);
			if (at < 0)
				break;
			__u32 off = (__u32)at & (DATA_MAX - 1);
			if (bpf_probe_read_user(&v, n & 15, (void *)addr) < 0) {
				vm->err = E_READ;
				vm->fault = addr;
				break;
			}
			struct region *r = (struct region *)&vm->data[off];
			__builtin_memcpy(&vm->data[(off + sizeof(struct region)) & (DATA_MAX * 2 - 1)], &v, 8);
			r->len = n;
			vm->head.len = off + sizeof(struct region) + (n & 15);
		} else if (bpf_probe_read_user(&v, n & 15, (void *)addr) < 0) {
			vm->err = E_READ;
			vm->fault = addr;
			break;
		}
		set_top(vm, extend(v, n, o->arg & 1));
		break;
	}
	case OP_DUP:
		push(vm, top(vm));
		break;
	case OP_SWAP: {
		__u64 a = pop(vm);
		__u64 b = pop(vm);
		push(vm, a);
		push(vm, b);
		break;
	}
	case OP_POP:
		pop(vm);
		break;
	case OP_BIN: {
		__u64 b = pop(vm);
		__u64 a = pop(vm);
		push(vm, binop(vm, o->arg, a, b));
		break;
	}
	case OP_NOT:
		set_top(vm, top(vm) == 0);
		break;
	case OP_NEG:
		set_top(vm, -top(vm));
		break;
	case OP_BOOL:
		set_top(vm, top(vm) != 0);
		break;
	case OP_JZK:
		if (top(vm) == 0 && o->next > pc)
			next = o->next;
		break;
	case OP_JNZK:
		if (top(vm) != 0 && o->next > pc)
			next = o->next;
		break;
	case OP_SEXT:
		set_top(vm, extend(top(vm), size, 1));
		break;
	case OP_ZEXT:
		set_top(vm, extend(top(vm), size, 0));
		break;
	case OP_FORD: {
		__u64 v = top(vm);
		__u64 sign = size == 4 ? (1ULL << 31) : (1ULL << 63);
		__u64 mask = size == 4 ? 0xffffffffULL : ~0ULL;
		v &= mask;
		v = (v & sign) ? (~v & mask) : (v | sign);
		set_top(vm, v);
		break;
	}
	case OP_CAPM:
		capture(vm, pop(vm), size, 0);
		break;
	case OP_CAPSTR:
		capture(vm, pop(vm), size, 1);
		break;
	case OP_CAPBUF: {
		__u64 len = pop(vm);
		__u64 addr = pop(vm);
		capture(vm, addr, len < size ? (__u32)len : size, 0);
		break;
	}
	case OP_SLOT:
		vm->slot_end = o->next;
		break;
	case OP_PICK: {
		__u32 i = o->arg;
		if (i + 1 > vm->sp) {
			vm->err = E_STACK;
			break;
		}
		push(vm, vm->stack[(vm->sp - 1 - i) & STACK_MASK]);
		break;
	}
	case OP_ROT: {
		if (vm->sp < 3) {
			vm->err = E_STACK;
			break;
		}
		__u64 a = pop(vm); /* top */
		__u64 b = pop(vm);
		__u64 c = pop(vm);
		push(vm, a);
		push(vm, c);
		push(vm, b);
		break;
	}
	default:
		return 1;
	}
	if (vm->err) {
		/* A capture slot that failed is skipped (its region says why); the others go on.
		 * A condition that failed ends the hit. */
		if (!vm->capture || vm->err == E_FULL || vm->slot_end <= pc)
			return 1;
		vm->err = E_NONE;
		vm->sp = 0;
		next = vm->slot_end;
	}
	vm->pc = next;
	return 0;
}

static __always_inline void copy_regs(struct vm *vm, struct pt_regs *ctx)
{
	/* DWARF register order (System V x86-64). */
	vm->head.regs[0] = ctx->rax;
	vm->head.regs[1] = ctx->rdx;
	vm->head.regs[2] = ctx->rcx;
	vm->head.regs[3] = ctx->rbx;
	vm->head.regs[4] = ctx->rsi;
	vm->head.regs[5] = ctx->rdi;
	vm->head.regs[6] = ctx->rbp;
	vm->head.regs[7] = ctx->rsp;
	vm->head.regs[8] = ctx->r8;
	vm->head.regs[9] = ctx->r9;
	vm->head.regs[10] = ctx->r10;
	vm->head.regs[11] = ctx->r11;
	vm->head.regs[12] = ctx->r12;
	vm->head.regs[13] = ctx->r13;
	vm->head.regs[14] = ctx->r14;
	vm->head.regs[15] = ctx->r15;
	vm->head.regs[16] = ctx->rip;
}

static __always_inline void run(struct vm *vm, __u32 from, __u32 to, __u32 capturing)
{
	vm->pc = from;
	vm->end = to;
	vm->sp = 0;
	vm->err = E_NONE;
	vm->slot_end = 0;
	vm->capture = capturing;
	bpf_loop(MAX_OPS, step, 0, 0);
}

static __always_inline void send(struct vm *vm, __u32 flags)
{
	__u32 len = vm->head.len;
	if (len > DATA_MAX + SLACK)
		len = DATA_MAX + SLACK;
	bpf_ringbuf_output(&events, &vm->head, sizeof(struct rec_head) + len, flags);
}

/* The condition, the rate limit and the hit limit; 1 when the hit is to be captured. */
static __always_inline int admit(struct vm *vm, struct plan *p, struct probe_state *st)
{
	if (p->cond_len) {
		run(vm, 0, p->cond_len, 0);
		if (vm->err) {
			__sync_fetch_and_add(&st->errors, 1);
			vm->head.kind = REC_ERROR;
			vm->head.err = vm->err;
			vm->head.value = vm->fault;
			vm->head.len = 0;
			send(vm, 0);
			return 0;
		}
		if (vm->sp == 0 || top(vm) == 0) {
			__sync_fetch_and_add(&st->filtered, 1);
			return 0;
		}
	}
	if (st->rate_allowed) {
		__u64 now = vm->head.ktime;
		if (now - st->window_start >= st->rate_window_ns) {
			/* Racy between CPUs by design: at worst a window admits a few hits more. */
			st->window_start = now;
			st->window_count = 0;
		}
		if (__sync_fetch_and_add(&st->window_count, 1) >= st->rate_allowed) {
			__sync_fetch_and_add(&st->rate_dropped, 1);
			return 0;
		}
	}
	__u64 n = __sync_fetch_and_add(&st->hits, 1);
	if (st->max_hits && n >= st->max_hits) {
		__sync_fetch_and_add(&st->hits, -1);
		return 0;
	}
	return 1;
}

/* Sets up the vm for a hit of `site`; NULL when the site has no live plan. */
static __always_inline struct vm *begin(struct pt_regs *ctx, __u32 site, struct plan **pp,
					struct probe_state **sp)
{
	struct plan *p = bpf_map_lookup_elem(&plans, &site);
	if (!p)
		return 0;
	__u32 probe = p->probe;
	struct probe_state *st = bpf_map_lookup_elem(&probes, &probe);
	if (!st || st->paused_at)
		return 0;
	struct vm *vm = the_vm();
	if (!vm)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	vm->site = site;
	vm->head.site = site;
	vm->head.kind = REC_HIT;
	vm->head.err = 0;
	vm->head.pid = id >> 32;
	vm->head.tid = (__u32)id;
	vm->head.ktime = bpf_ktime_get_ns();
	vm->head.value = 0;
	vm->head.len = 0;
	vm->head.pad = 0;
	vm->fault = 0;
	copy_regs(vm, ctx);
	*pp = p;
	*sp = st;
	return vm;
}

/* Whether this hit continues an execution of the line already reported on this thread: a
 * line with several addresses (a loop head split in two) left at a lower address and came
 * back at a higher one, in the same frame and scope. Decided before the condition and the
 * limits, so a hit limit counts executions, as on ptrace (src/repeat.rs is the same rule). */
static __always_inline int is_repeat(struct vm *vm, struct plan *p)
{
	__u64 cfa = 0;
	if (p->cfa_reg <= 16)
		cfa = vm->head.regs[p->cfa_reg & 31] + (__u64)p->cfa_off;
	struct last_key key = { .tid = vm->head.tid, .probe = p->probe };
	struct last_hit now = { .addr = p->addr, .cfa = cfa, .scope = p->scope, .reported = 1 };
	struct last_hit *prev = bpf_map_lookup_elem(&last_hits, &key);
	int repeat = prev && prev->reported && prev->cfa == cfa && prev->scope == p->scope &&
		     p->addr > prev->addr;
	if (repeat)
		now.reported = 0;
	bpf_map_update_elem(&last_hits, &key, &now, BPF_ANY);
	return repeat;
}

/* A hit of `ctx`'s site, admitted and captured: the vm holding its record, or NULL. `*sp` is
 * the probe's state when the hit did any work for it (what charge() counts), else NULL. */
static __always_inline struct vm *capture_hit(struct pt_regs *ctx, struct plan **pp,
					      struct probe_state **sp)
{
	__u32 site = (__u32)bpf_get_attach_cookie(ctx);
	struct probe_state *st;
	*sp = 0;
	struct vm *vm = begin(ctx, site, pp, &st);
	if (!vm)
		return 0;
	*sp = st;
	struct plan *p = *pp;
	if ((p->flags & PLAN_REPEATS) && is_repeat(vm, p))
		return 0;
	if (!admit(vm, p, st))
		return 0;
	if (p->nops > p->cond_len)
		run(vm, p->cond_len, p->nops, 1);
	vm->head.err = vm->err;
	return vm;
}

/* The overhead budget: the time this program ran for the probe at a hit, from its first
 * instruction (`t0`) to just before it returns, charged to the probe's window as the ptrace
 * engine charges the time it holds a thread (src/engine/hit.rs): a window starts at the first
 * charge at least a window after the last one started. What the kernel spends on the uprobe
 * trap around the program is not visible here and not counted. Past the budget the probe is
 * paused: its later hits return at once (begin() checks first), and user space, which polls
 * `paused_at`, takes its uprobes out and says why. Racy between CPUs by design, like the rate
 * window: at worst a window forgets a few charges. */
static __always_inline void charge(struct probe_state *st, __u64 t0)
{
	if (!st)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u64 cost = now - t0;
	__sync_fetch_and_add(&st->busy_ns, cost);
	if (!st->budget_ns)
		return;
	if (now - st->budget_start >= st->budget_window_ns) {
		st->budget_start = now;
		st->budget_used = 0;
	}
	__u64 used = __sync_fetch_and_add(&st->budget_used, cost) + cost;
	if (used > st->budget_ns && !st->paused_at)
		st->paused_at = now;
}

SEC("uprobe")
int periscope_hit(struct pt_regs *ctx)
{
	__u64 t0 = bpf_ktime_get_ns();
	struct plan *p;
	struct probe_state *st;
	struct vm *vm = capture_hit(ctx, &p, &st);
	if (vm)
		send(vm, (p->flags & PLAN_QUIET) ? BPF_RB_NO_WAKEUP : 0);
	charge(st, t0);
	return 0;
}

/* A duration's entry: the condition and limits now, the rest kept until the return. */
SEC("uprobe")
int periscope_entry(struct pt_regs *ctx)
{
	__u64 t0 = bpf_ktime_get_ns();
	struct plan *p;
	struct probe_state *st;
	struct vm *vm = capture_hit(ctx, &p, &st);
	if (!vm) {
		charge(st, t0);
		return 0;
	}
	__u32 site = vm->site;
	if (vm->head.len > ENTRY_DATA) {
		vm->head.err = E_FULL;
		vm->head.len = 0;
	}
	struct entry_key key = { .pid_tgid = bpf_get_current_pid_tgid(), .site = site };
	/* The kept entry is written straight from the vm: head then data are contiguous. */
	bpf_map_update_elem(&entries, &key, &vm->head, BPF_ANY);
	charge(st, t0);
	return 0;
}

SEC("uretprobe")
int periscope_return(struct pt_regs *ctx)
{
	__u64 t0 = bpf_ktime_get_ns();
	__u32 site = (__u32)bpf_get_attach_cookie(ctx);
	struct entry_key key = { .pid_tgid = bpf_get_current_pid_tgid(), .site = site };
	struct entry *e = bpf_map_lookup_elem(&entries, &key);
	if (!e)
		return 0;
	struct plan *p = bpf_map_lookup_elem(&plans, &site);
	struct probe_state *st = 0;
	if (p) {
		__u32 probe = p->probe;
		st = bpf_map_lookup_elem(&probes, &probe);
	}
	struct vm *vm = the_vm();
	if (!vm || (st && st->paused_at)) {
		/* Paused since the call's entry: no more work for the probe. */
		bpf_map_delete_elem(&entries, &key);
		return 0;
	}
	__builtin_memcpy(&vm->head, &e->head, sizeof(struct rec_head));
	__u32 len = e->head.len;
	if (len > ENTRY_DATA)
		len = ENTRY_DATA;
	bpf_probe_read_kernel(vm->data, len & (ENTRY_DATA * 2 - 1), e->data);
	bpf_map_delete_elem(&entries, &key);
	vm->head.kind = REC_RETURN;
	vm->head.value = bpf_ktime_get_ns() - vm->head.ktime;
	vm->head.len = len;
	send(vm, (p && (p->flags & PLAN_QUIET)) ? BPF_RB_NO_WAKEUP : 0);
	charge(st, t0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
