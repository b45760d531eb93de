//! The strategy as a plugin author writes it ([`KvStrategy`]) and as it crosses the ABI
//! ([`Strategy`]), with the panic guard between them.
#![allow(non_local_definitions)] // emitted by the #[sabi_trait] expansion

use crate::options::{Options, PluginOption};
use crate::plan::{Admission, Growth, PoolInfo, Request, StepInfo, StrategyStats};
use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RResult, RSlice, RString, RVec};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a plugin author implements: the policy of one KV-cache strategy.
///
/// Errors are plain strings; the host reports them with the plugin's name. A panic is caught
/// and reported too, after which the strategy refuses further calls.
///
/// The order of calls for one sequence: [`admit`](Self::admit) once (again after a
/// preemption), then [`grow`](Self::grow) once per step while it runs, then
/// [`release`](Self::release). [`on_step`](Self::on_step) reports each step's tokens one step
/// late (after the next step's `grow` calls).
pub trait KvStrategy: Send + 'static {
    /// A fresh strategy for a pool; called once per benchmark point. Read your options from
    /// `options` (each with a default); any option given that you do not read is an error.
    fn new(pool: PoolInfo, options: &Options) -> Result<Self, String>
    where
        Self: Sized;
    /// Place a new sequence's tokens, or say there is no room.
    fn admit(&mut self, request: &Request) -> Result<Admission, String>;
    /// Make room for the sequence's next positions, up to `target_len` (exclusive). At a decode
    /// step that is one position, the token just sampled; while a prompt is prefilled in pieces
    /// it is the prompt's length, and the answer may stop short of it (the host asks again at
    /// the next step). See [`Growth`].
    fn grow(&mut self, seq_id: u64, target_len: u32) -> Result<Growth, String>;
    /// The sequence finished or was preempted: free its blocks or retain them for reuse.
    /// `tokens` are those whose KV the pool holds for it, in order: the prompt and every
    /// generated token that went through the model (not the last one sampled).
    fn release(&mut self, seq_id: u64, tokens: &[u32]) -> Result<(), String>;
    fn stats(&self) -> StrategyStats;
    /// A step ran: the tokens its growth wrote (each decode token, with its position). Where a
    /// strategy that evicts by what it has seen decides; the decision takes effect in its next
    /// [`grow`](Self::grow) answers. Timing: the host plans step N+1 (its `grow` calls) before it
    /// delivers step N's hook, whether or not it prepares steps ahead, so a strategy sees the
    /// same calls in the same order either way.
    fn on_step(&mut self, step: &StepInfo) -> Result<(), String> {
        let _ = step;
        Ok(())
    }
}

/// The strategy as the host sees it across the ABI.
#[sabi_trait]
pub trait Strategy: Send {
    fn admit(&mut self, request: &Request) -> RResult<Admission, RString>;
    fn grow(&mut self, seq_id: u64, target_len: u32) -> RResult<Growth, RString>;
    fn release(&mut self, seq_id: u64, tokens: RSlice<'_, u32>) -> RResult<(), RString>;
    fn on_step(&mut self, step: &StepInfo) -> RResult<(), RString>;
    /// Every option the strategy read in `new`, with the value it got (given or default).
    fn options(&self) -> RVec<PluginOption>;
    #[sabi(last_prefix_field)]
    fn stats(&self) -> RResult<StrategyStats, RString>;
}

pub type StrategyBox = Strategy_TO<'static, RBox<()>>;

/// Runs `f`; the outer `Err` is a caught panic, described.
fn run_guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<Result<T, String>, String> {
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
    options: Vec<PluginOption>,
}

impl<S: KvStrategy> Guarded<S> {
    /// `options`: what the strategy read in `new` (see [`Options::used`]).
    pub fn new(inner: S, options: Vec<PluginOption>) -> Self {
        Guarded {
            inner,
            poisoned: None,
            options,
        }
    }

    fn call<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut S) -> Result<T, String>,
    ) -> RResult<T, RString> {
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
    fn grow(&mut self, seq_id: u64, target_len: u32) -> RResult<Growth, RString> {
        self.call("grow", |s| s.grow(seq_id, target_len))
    }
    fn release(&mut self, seq_id: u64, tokens: RSlice<'_, u32>) -> RResult<(), RString> {
        self.call("release", |s| s.release(seq_id, tokens.as_slice()))
    }
    fn on_step(&mut self, step: &StepInfo) -> RResult<(), RString> {
        self.call("on_step", |s| s.on_step(step))
    }
    fn options(&self) -> RVec<PluginOption> {
        self.options.clone().into()
    }
    fn stats(&self) -> RResult<StrategyStats, RString> {
        if let Some(p) = &self.poisoned {
            return RResult::RErr(format!("refusing stats: the strategy earlier {p}").into());
        }
        catch_panic("stats", || Ok(self.inner.stats()))
    }
}

/// Creates and boxes a strategy for the ABI (what [`export_strategy!`](crate::export_strategy)
/// calls): `S::new` with the options, then an error for any option it did not read.
pub fn new_boxed<S: KvStrategy>(
    pool: PoolInfo,
    options: RSlice<'_, PluginOption>,
) -> RResult<StrategyBox, RString> {
    let made = catch_panic("new", || {
        let opts = Options::new(options.as_slice());
        let s = S::new(pool, &opts)?;
        opts.check_all_read()?;
        Ok((s, opts.used()))
    });
    match made {
        RResult::ROk((s, used)) => RResult::ROk(Strategy_TO::from_value(
            Guarded::new(s, used),
            sabi_trait::TD_Opaque,
        )),
        RResult::RErr(e) => RResult::RErr(e),
    }
}
