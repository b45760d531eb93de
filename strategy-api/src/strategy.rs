//! The strategy as a plugin author writes it ([`KvStrategy`]) and as it crosses the ABI
//! ([`Strategy`]), with the panic guard between them.
#![allow(non_local_definitions)] // emitted by the #[sabi_trait] expansion

use crate::plan::{Admission, PoolInfo, Request, Span, StrategyStats};
use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, ROption, RResult, RString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a plugin author implements: the policy of one KV-cache strategy.
///
/// Errors are plain strings; the host reports them with the plugin's name. A panic is caught
/// and reported too, after which the strategy refuses further calls.
pub trait KvStrategy: Send + 'static {
    /// A fresh strategy for a pool; called once per benchmark point.
    fn new(pool: PoolInfo) -> Result<Self, String>
    where
        Self: Sized;
    /// Place a new sequence's tokens, or say there is no room.
    fn admit(&mut self, request: &Request) -> Result<Admission, String>;
    /// Grow the sequence to hold `new_len` tokens (one decode slot); returns its last span,
    /// which must be private, or `None` when there is no room (the host then preempts).
    fn append_slot(&mut self, seq_id: u64, new_len: u32) -> Result<Option<Span>, String>;
    /// The sequence is finished or preempted: free its blocks or retain them for reuse.
    fn release(&mut self, seq_id: u64) -> Result<(), String>;
    fn stats(&self) -> StrategyStats;
}

/// The strategy as the host sees it across the ABI.
#[sabi_trait]
pub trait Strategy: Send {
    fn admit(&mut self, request: &Request) -> RResult<Admission, RString>;
    fn append_slot(&mut self, seq_id: u64, new_len: u32) -> RResult<ROption<Span>, RString>;
    fn release(&mut self, seq_id: u64) -> RResult<(), RString>;
    #[sabi(last_prefix_field)]
    fn stats(&self) -> RResult<StrategyStats, RString>;
}

pub type StrategyBox = Strategy_TO<'static, RBox<()>>;

/// Runs `f`; the outer `Err` is a caught panic, described.
fn run_guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<Result<T, String>, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        format!("panicked in {what}: {msg}")
    })
}

/// Runs plugin code so that a panic becomes an error value instead of an abort at the boundary.
pub fn catch_panic<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match run_guarded(what, f) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) | Err(e) => RResult::RErr(e.into()),
    }
}

/// Wraps a [`KvStrategy`] for the ABI: every call is panic-guarded, and after a panic the
/// strategy's state is suspect, so every later call fails.
pub struct Guarded<S> {
    inner: S,
    poisoned: Option<String>,
}

impl<S: KvStrategy> Guarded<S> {
    pub fn new(inner: S) -> Self {
        Guarded { inner, poisoned: None }
    }

    fn call<T>(&mut self, what: &str, f: impl FnOnce(&mut S) -> Result<T, String>) -> RResult<T, RString> {
        if let Some(p) = &self.poisoned {
            return RResult::RErr(format!("refusing {what}: the strategy earlier {p}").into());
        }
        let inner = &mut self.inner;
        match run_guarded(what, || f(inner)) {
            Ok(Ok(v)) => RResult::ROk(v),
            Ok(Err(e)) => RResult::RErr(e.into()),
            Err(panic) => {
                self.poisoned = Some(panic.clone());
                RResult::RErr(panic.into())
            }
        }
    }
}

impl<S: KvStrategy> Strategy for Guarded<S> {
    fn admit(&mut self, request: &Request) -> RResult<Admission, RString> {
        self.call("admit", |s| s.admit(request))
    }
    fn append_slot(&mut self, seq_id: u64, new_len: u32) -> RResult<ROption<Span>, RString> {
        self.call("append_slot", |s| s.append_slot(seq_id, new_len).map(ROption::from))
    }
    fn release(&mut self, seq_id: u64) -> RResult<(), RString> {
        self.call("release", |s| s.release(seq_id))
    }
    fn stats(&self) -> RResult<StrategyStats, RString> {
        if let Some(p) = &self.poisoned {
            return RResult::RErr(format!("refusing stats: the strategy earlier {p}").into());
        }
        catch_panic("stats", || Ok(self.inner.stats()))
    }
}

/// Boxes a strategy for the ABI (what [`export_strategy!`](crate::export_strategy) calls).
pub fn new_boxed<S: KvStrategy>(pool: PoolInfo) -> RResult<StrategyBox, RString> {
    match catch_panic("new", || S::new(pool)) {
        RResult::ROk(s) => RResult::ROk(Strategy_TO::from_value(Guarded::new(s), sabi_trait::TD_Opaque)),
        RResult::RErr(e) => RResult::RErr(e),
    }
}
