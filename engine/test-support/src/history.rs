//! Linearizability of memcached commands on one key: a sequential model of get (gets),
//! set, add, cas, append, delete and incr, a history of calls and returns recorded as
//! they happen, and the check, `todc-utils`' `WGLChecker` (Wing & Gong's search with
//! Lowe's memoisation, as Porcupine does). Values written by the tests are unique, so a
//! value names its version (a `cas` carries the value it expects). An op whose outcome
//! is unknown returns, in the history, after everything else with a result that
//! matches anything; one that certainly did not run ("no leader") is withdrawn.

use todc_utils::linearizability::history::{Action, History};
use todc_utils::linearizability::WGLChecker;
use todc_utils::specifications::Specification;

/// A command on one key, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cmd {
    Get,
    Set(Vec<u8>),
    Add(Vec<u8>),
    /// `cas` with the token of the version whose value was `expected` (None: a token
    /// no version has).
    Cas {
        new: Vec<u8>,
        expected: Option<Vec<u8>>,
    },
    Append(Vec<u8>),
    Delete,
    Incr(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ret {
    Value(Option<Vec<u8>>),
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Number(u64),
    NonNumeric,
}

/// memcached's semantics for one key (values are unique, so a value names its version):
/// the state is the value, an operation is a command with its result (None: unknown).
pub struct Model;

pub fn step(cmd: &Cmd, value: &Option<Vec<u8>>) -> (Ret, Option<Vec<u8>>) {
    let mut value = value.clone();
    let ret = match (cmd, &mut value) {
        (Cmd::Get, v) => Ret::Value(v.clone()),
        (Cmd::Set(new), v) => {
            *v = Some(new.clone());
            Ret::Stored
        }
        (Cmd::Add(new), v @ None) => {
            *v = Some(new.clone());
            Ret::Stored
        }
        (Cmd::Add(_), Some(_)) => Ret::NotStored,
        (Cmd::Cas { .. }, None) => Ret::NotFound,
        (Cmd::Cas { new, expected }, v @ Some(_)) => {
            if expected.as_ref() == v.as_ref() {
                *v = Some(new.clone());
                Ret::Stored
            } else {
                Ret::Exists
            }
        }
        (Cmd::Append(_), None) => Ret::NotStored,
        (Cmd::Append(data), Some(v)) => {
            v.extend_from_slice(data);
            Ret::Stored
        }
        (Cmd::Delete, v) => match v.take() {
            Some(_) => Ret::Deleted,
            None => Ret::NotFound,
        },
        (Cmd::Incr(_), None) => Ret::NotFound,
        (Cmd::Incr(d), Some(v)) => match std::str::from_utf8(v).ok().and_then(|s| s.trim_end().parse::<u64>().ok()) {
            Some(n) => {
                let n = n.wrapping_add(*d);
                *v = n.to_string().into_bytes();
                Ret::Number(n)
            }
            None => Ret::NonNumeric,
        },
    };
    (ret, value)
}

impl Specification for Model {
    type State = Option<Vec<u8>>;
    type Operation = (Cmd, Option<Ret>);

    fn init() -> Self::State {
        None
    }

    fn apply((cmd, ret): &Self::Operation, state: &Self::State) -> (bool, Self::State) {
        let (expected, next) = step(cmd, state);
        (ret.as_ref().is_none_or(|r| *r == expected), next)
    }
}

/// One key's history as it happens: calls and returns in real-time order.
#[derive(Default)]
pub struct KeyHistory {
    /// (process, op) in the order they happened; an op appears at its call and its return.
    events: Vec<(usize, usize)>,
    ops: Vec<(Cmd, Option<Ret>, bool)>,
}

impl KeyHistory {
    pub fn call(&mut self, process: usize, cmd: Cmd) -> usize {
        self.ops.push((cmd, None, false));
        self.events.push((process, self.ops.len() - 1));
        self.ops.len() - 1
    }

    /// An op that did not happen leaves the history.
    pub fn withdraw(&mut self, op: usize) {
        self.events.retain(|&(_, o)| o != op);
    }

    pub fn answer(&mut self, process: usize, op: usize, ret: Ret) {
        self.ops[op].1 = Some(ret);
        self.ops[op].2 = true;
        self.events.push((process, op));
    }

    pub fn is_linearizable(&self) -> bool {
        if self.events.is_empty() {
            return true;
        }
        let mut called = vec![None; self.ops.len()];
        let mut actions = Vec::new();
        for &(process, op) in &self.events {
            let (cmd, ret, _) = &self.ops[op];
            let operation = (cmd.clone(), ret.clone());
            let action = if called[op].is_some() { Action::Response(operation) } else { Action::Call(operation) };
            called[op] = Some(process);
            actions.push((process, action));
        }
        // Ops never answered return last, with any result.
        for (op, (cmd, ret, answered)) in self.ops.iter().enumerate() {
            if let (false, Some(process)) = (answered, called[op]) {
                actions.push((process, Action::Response((cmd.clone(), ret.clone()))));
            }
        }
        WGLChecker::<Model>::is_linearizable(History::from_actions(actions))
    }
}

/// What became of an op.
pub enum Fate {
    Answered(Ret, Option<u64>),
    /// "No leader": it was never decided, so it did not happen.
    NotRun,
    /// It may or may not have happened.
    Unknown,
}

/// The reply to one op.
pub fn parse(cmd: &Cmd, reply: &[u8]) -> Fate {
    if reply.starts_with(b"SERVER_ERROR replication: no leader") {
        return Fate::NotRun;
    }
    match parse_answer(cmd, reply) {
        Some((ret, cas)) => Fate::Answered(ret, cas),
        None => Fate::Unknown,
    }
}

/// The reply to one op, as the model's return (None: an error, the outcome unknown).
pub fn parse_answer(cmd: &Cmd, reply: &[u8]) -> Option<(Ret, Option<u64>)> {
    let line = |s: &[u8]| reply == s;
    let ret = match cmd {
        Cmd::Get => {
            // A shard's job answers a miss with nothing, a connection with END.
            if reply.is_empty() || reply == b"END\r\n" {
                return Some((Ret::Value(None), None));
            }
            if reply.starts_with(b"SERVER_ERROR") {
                return None;
            }
            let text = std::str::from_utf8(reply).ok()?;
            let (header, rest) = text.split_once("\r\n")?;
            let fields: Vec<&str> = header.split(' ').collect();
            let (len, cas): (usize, u64) = (fields.get(3)?.parse().ok()?, fields.get(4)?.parse().ok()?);
            return Some((Ret::Value(Some(rest.as_bytes()[..len].to_vec())), Some(cas)));
        }
        _ if line(b"STORED\r\n") => Ret::Stored,
        _ if line(b"NOT_STORED\r\n") => Ret::NotStored,
        _ if line(b"EXISTS\r\n") => Ret::Exists,
        _ if line(b"NOT_FOUND\r\n") => Ret::NotFound,
        _ if line(b"DELETED\r\n") => Ret::Deleted,
        _ if reply.starts_with(b"CLIENT_ERROR cannot increment") => Ret::NonNumeric,
        _ if reply.starts_with(b"SERVER_ERROR") => return None,
        Cmd::Incr(_) => Ret::Number(std::str::from_utf8(reply).ok()?.trim_end().parse().ok()?),
        _ => panic!("unexpected reply {:?} to {cmd:?}", String::from_utf8_lossy(reply)),
    };
    Some((ret, None))
}
