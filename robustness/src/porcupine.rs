//! A linearizability checker: a port of porcupine's algorithm (Wing & Gong
//! with Lowe's memoization, as in github.com/anishathalye/porcupine
//! `checker.go`), over a sequential [`Model`], with a deadline.
//!
//! Operations become call and return events ordered by time (calls first
//! at equal times, so that touching intervals count as concurrent) in a
//! doubly linked list. The search linearizes the first call whose step the
//! model accepts, lifts its call and return out of the list, and goes on
//! from the head; when it reaches a return whose call could not be
//! linearized, it backtracks. A (linearized set, state) pair seen before is
//! not explored again. Revisions in the outputs let the model refuse most
//! orders at once, so the search stays small.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Instant;

/// A sequential specification.
pub trait Model {
    /// The object's state.
    type State: Clone + Eq + Hash;
    /// What an operation asks.
    type Input;
    /// What it answered.
    type Output;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` answered `output` in `state`, or `None`
    /// when that answer is impossible there.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;
}

/// One operation: what it asked and answered, and when it was called and
/// returned (any time unit; [`u64::MAX`] for "never").
#[derive(Debug, Clone)]
pub struct Operation<I, O> {
    /// What it asked.
    pub input: I,
    /// What it answered.
    pub output: O,
    /// Call time.
    pub call: u64,
    /// Return time.
    pub ret: u64,
}

/// The checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations respects real time and the model.
    Linearizable,
    /// None does; the operations (indexes) of the longest linearizable
    /// prefix found, to help find the culprit.
    Illegal { longest_prefix: Vec<usize> },
    /// The deadline passed first (a failure, not a pass).
    Timeout,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    /// The operation.
    op: usize,
    /// A call (with the index of its return node) or a return.
    matched: Option<usize>,
    prev: usize,
    next: usize,
}

/// Explored (linearized set, state) pairs, by their hash.
type Cache<S> = HashMap<u64, Vec<(Vec<u64>, S)>>;

/// Index of the list's head sentinel.
const HEAD: usize = 0;
/// Stands for "no node".
const NIL: usize = usize::MAX;

struct List {
    nodes: Vec<Node>,
}

impl List {
    fn new(events: &[(u64, bool, usize)], return_of: &HashMap<usize, usize>) -> List {
        // Node 0 is the head; event k is node k + 1.
        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(Node {
            op: usize::MAX,
            matched: None,
            prev: NIL,
            next: if events.is_empty() { NIL } else { 1 },
        });
        for (k, &(_, is_call, op)) in events.iter().enumerate() {
            let me = k + 1;
            nodes.push(Node {
                op,
                matched: if is_call {
                    return_of.get(&op).copied()
                } else {
                    None
                },
                prev: me - 1,
                next: if me == events.len() { NIL } else { me + 1 },
            });
        }
        List { nodes }
    }

    fn unlink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = n;
        if next != NIL {
            self.nodes[next].prev = n;
        }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.nodes[call].matched {
            self.unlink(ret);
        }
    }

    /// Puts them back (in the reverse order of `lift`).
    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.nodes[call].matched {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// Whether `ops` is linearizable with respect to `model`, searching until
/// `deadline`.
pub fn check<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    deadline: Instant,
) -> Verdict {
    // Events: (time, is_call, op); calls sort before returns at equal times.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, true, i));
        events.push((op.ret, false, i));
    }
    events.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let mut return_of = HashMap::new();
    for (k, &(_, is_call, op)) in events.iter().enumerate() {
        if !is_call {
            return_of.insert(op, k + 1);
        }
    }
    let mut list = List::new(&events, &return_of);
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: Cache<M::State> = HashMap::new();
    let mut calls: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut longest: Vec<usize> = Vec::new();
    let mut entry = list.nodes[HEAD].next;
    let mut steps: u64 = 0;
    while list.nodes[HEAD].next != NIL {
        steps += 1;
        if steps.is_multiple_of(4096) && Instant::now() > deadline {
            return Verdict::Timeout;
        }
        if entry == NIL {
            // Cannot happen while a return remains; stop as illegal.
            return Verdict::Illegal {
                longest_prefix: longest,
            };
        }
        let node = list.nodes[entry];
        if node.matched.is_some() {
            let op = &ops[node.op];
            let mut accepted = false;
            if let Some(next) = model.step(&state, &op.input, &op.output) {
                let mut set = linearized.clone();
                set[node.op / 64] |= 1 << (node.op % 64);
                let key = fingerprint(&set, &next);
                let seen = cache
                    .get(&key)
                    .is_some_and(|v| v.iter().any(|(s, st)| *s == set && *st == next));
                if !seen {
                    cache
                        .entry(key)
                        .or_default()
                        .push((set.clone(), next.clone()));
                    calls.push((entry, state));
                    state = next;
                    linearized = set;
                    list.lift(entry);
                    if calls.len() > longest.len() {
                        longest = calls.iter().map(|(n, _)| list.nodes[*n].op).collect();
                    }
                    entry = list.nodes[HEAD].next;
                    accepted = true;
                }
            }
            if !accepted {
                entry = node.next;
            }
        } else {
            // A return whose call is not linearized yet: backtrack.
            let Some((call, previous)) = calls.pop() else {
                return Verdict::Illegal {
                    longest_prefix: longest,
                };
            };
            let op = list.nodes[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = previous;
            list.unlift(call);
            entry = list.nodes[call].next;
        }
    }
    Verdict::Linearizable
}

fn fingerprint<S: Hash>(set: &[u64], state: &S) -> u64 {
    let mut h = DefaultHasher::new();
    set.hash(&mut h);
    state.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A register of u32, reads and writes.
    struct Register;

    #[derive(Debug, Clone)]
    enum In {
        Read,
        Write(u32),
    }

    impl Model for Register {
        type State = u32;
        type Input = In;
        type Output = u32;
        fn init(&self) -> u32 {
            0
        }
        fn step(&self, state: &u32, input: &In, output: &u32) -> Option<u32> {
            match input {
                In::Read => (output == state).then_some(*state),
                In::Write(v) => Some(*v),
            }
        }
    }

    fn op(input: In, output: u32, call: u64, ret: u64) -> Operation<In, u32> {
        Operation {
            input,
            output,
            call,
            ret,
        }
    }

    fn verdict(ops: &[Operation<In, u32>]) -> Verdict {
        check(&Register, ops, Instant::now() + Duration::from_secs(5))
    }

    #[test]
    fn concurrent_write_and_read_either_way() {
        // A write of 1 overlapping a read that sees 0 or 1: both fine.
        for seen in [0, 1] {
            let ops = [op(In::Write(1), 0, 0, 10), op(In::Read, seen, 5, 15)];
            assert_eq!(verdict(&ops), Verdict::Linearizable);
        }
    }

    #[test]
    fn a_stale_read_after_a_write_returned_is_caught() {
        let ops = [op(In::Write(1), 0, 0, 10), op(In::Read, 0, 20, 30)];
        assert!(matches!(verdict(&ops), Verdict::Illegal { .. }));
    }

    #[test]
    fn a_write_that_never_returned_may_apply_late_or_never() {
        let ops = [
            op(In::Write(1), 0, 0, u64::MAX),
            op(In::Read, 0, 5, 6),
            op(In::Read, 1, 7, 8),
        ];
        assert_eq!(verdict(&ops), Verdict::Linearizable);
        let ops = [
            op(In::Write(1), 0, 0, u64::MAX),
            op(In::Read, 1, 5, 6),
            op(In::Read, 0, 7, 8),
        ];
        assert!(matches!(verdict(&ops), Verdict::Illegal { .. }));
    }

    #[test]
    fn many_concurrent_writes_are_searched_quickly() {
        // 12 overlapping writes, then a read of the last value written by
        // any of them: linearizable whichever it is.
        let mut ops: Vec<Operation<In, u32>> =
            (1..=12).map(|v| op(In::Write(v), 0, 0, 100)).collect();
        ops.push(op(In::Read, 7, 200, 201));
        assert_eq!(verdict(&ops), Verdict::Linearizable);
        ops.push(op(In::Read, 99, 300, 301));
        assert!(matches!(verdict(&ops), Verdict::Illegal { .. }));
    }
}
