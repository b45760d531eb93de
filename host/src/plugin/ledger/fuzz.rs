//! Random plans against the ledger: whatever a strategy answers, checking never panics, and
//! every plan it accepts keeps the pool's invariant, checked against a shadow pool that this
//! test updates the way the engine would (copies, then each job's computed slots):
//! every entry of every live context holds its token at its position, and no slot a live
//! sequence reads is rewritten with something else.
//!
//! The scenarios follow from a fixed seed (live sequences are kept in id order, so the same
//! ones are picked on every run). `NANOHOST_LEDGER_FUZZ_CASES` sets their number (default
//! 2,000, a few seconds);
//! results/ records a run of a million.

use super::*;
use crate::engine::kv_policy::HostJob;
use crate::rng::Rng;
use nanohost_kernels::context_slot;
use nanohost_strategy_api::{AttentionMode, ComputeJob, CopyJob, LayerRange};
use nanohost_strategy_api::{Context, Growth};

struct Seq {
    tokens: Vec<u32>,
    spans: Vec<Span>,
}

struct World {
    ledger: Ledger,
    shadow: Vec<Option<(u32, u32)>>,
    seqs: std::collections::BTreeMap<SeqId, Seq>,
    block_size: u32,
    num_blocks: u32,
    next_id: SeqId,
    accepted: u64,
    refused: u64,
    /// The accepted plans, for the report of a broken invariant.
    log: Vec<String>,
}

fn pick(rng: &mut Rng, n: u32) -> u32 {
    rng.range_inclusive(0, n.saturating_sub(1) as u64) as u32
}

impl World {
    /// A random span over random blocks (sometimes out of the pool) for positions `start..start + len`.
    fn span(&self, rng: &mut Rng, start: u32, len: u32) -> Span {
        let odd_slot = u32::from(rng.range_inclusive(0, 20) == 0);
        let first = pick(rng, self.block_size + odd_slot);
        let blocks =
            (first + len).div_ceil(self.block_size) + u32::from(rng.range_inclusive(0, 20) == 0);
        let ids: Vec<u32> = (0..blocks)
            .map(|_| {
                let outside = u32::from(rng.range_inclusive(0, 30) == 0);
                pick(rng, self.num_blocks + outside)
            })
            .collect();
        let rotated = if rng.range_inclusive(0, 10) == 0 {
            pick(rng, start + 3)
        } else {
            start
        };
        let mut s = Span::private(ids, start, len)
            .from_slot(first)
            .rotated_for(rotated);
        s.shared = rng.range_inclusive(0, 2) == 0;
        if rng.range_inclusive(0, 40) == 0 {
            s.layers = LayerRange { first: 0, end: 1 };
        }
        s
    }

    /// Spans covering an increasing run of positions of `0..end` (some skipped), always `end - 1`.
    fn context(&self, rng: &mut Rng, end: u32) -> Vec<Span> {
        let mut spans = Vec::new();
        let mut pos = 0;
        while pos < end {
            pos += pick(rng, 3).min(end - 1 - pos) * u32::from(rng.range_inclusive(0, 2) == 0);
            let len = 1 + pick(rng, (end - pos).min(2 * self.block_size));
            spans.push(self.span(rng, pos, len));
            pos += len;
        }
        spans
    }

    fn copies(&self, rng: &mut Rng) -> Vec<CopyJob> {
        let slots = self.num_blocks * self.block_size;
        (0..pick(rng, 3) * u32::from(rng.range_inclusive(0, 3) == 0))
            .map(|_| CopyJob {
                src: pick(rng, slots),
                dst: pick(rng, slots),
                len: 1 + pick(rng, 3),
            })
            .collect()
    }

    /// What the engine writes for an accepted plan: copies, then each job's computed entries.
    fn run(&mut self, copies: &[CopyJob], jobs: &[HostJob]) {
        let gathered: Vec<Vec<Option<(u32, u32)>>> = copies
            .iter()
            .map(|c| {
                (c.src..c.src + c.len)
                    .map(|s| self.shadow[s as usize])
                    .collect()
            })
            .collect();
        for (c, values) in copies.iter().zip(gathered) {
            for (k, v) in values.into_iter().enumerate() {
                self.shadow[c.dst as usize + k] = v;
            }
        }
        for job in jobs {
            let kv: usize = job.context.iter().map(|s| s.len).sum();
            for (i, (&t, &p)) in job.tokens.iter().zip(&job.positions).enumerate() {
                let slot = context_slot(
                    &job.context,
                    kv - job.tokens.len() + i,
                    self.block_size as usize,
                )
                .expect("an accepted job has its slots");
                self.shadow[slot as usize] = Some((t, p));
            }
        }
    }

    /// Every live entry holds its token at its (rotated) position; private blocks are not read
    /// by another live sequence.
    fn check(&self) {
        let mut private: HashMap<u32, SeqId> = HashMap::new();
        for (&id, s) in &self.seqs {
            for span in &s.spans {
                for o in 0..span.len {
                    let slot = span.slot(o, self.block_size);
                    let want = (
                        s.tokens[(span.start_pos + o) as usize],
                        span.rotated_pos + o,
                    );
                    assert_eq!(
                        self.shadow[slot as usize],
                        Some(want),
                        "sequence {id}, span {span:?}, entry {o}; accepted plans:\n{}",
                        self.log.join("\n")
                    );
                }
                if !span.shared {
                    for &b in span.blocks.iter() {
                        private.insert(b, id);
                    }
                }
            }
        }
        for (&id, s) in &self.seqs {
            for b in s.spans.iter().flat_map(|s| s.blocks.iter()) {
                if let Some(&owner) = private.get(b) {
                    assert_eq!(owner, id, "block {b} is private to {owner} and in the context of {id}; accepted plans:\n{}", self.log.join("\n"));
                }
            }
        }
    }

    fn admit(&mut self, rng: &mut Rng) {
        let len = 1 + pick(rng, 3 * self.block_size + 2);
        let tokens: Vec<u32> = (0..len).map(|_| pick(rng, 3)).collect();
        let spans = self.context(rng, len);
        let n = spans.len() as u32;
        let entries: u32 = spans.iter().map(|s| s.len).sum();
        let jobs = vec![ComputeJob {
            context: (0..n)
                .filter(|_| rng.range_inclusive(0, 8) != 0)
                .collect::<Vec<_>>()
                .into(),
            len: 1 + pick(rng, entries),
        }];
        let copies = self.copies(rng);
        let id = self.next_id;
        self.next_id += 1;
        match self.ledger.check_admission(
            id,
            &tokens,
            spans.clone(),
            &jobs,
            copies.clone(),
            AttentionMode::Flat,
        ) {
            Ok(checked) => {
                let placement = self.ledger.apply(checked);
                self.log.push(format!(
                    "admit {id} {tokens:?} spans {spans:?} copies {copies:?}"
                ));
                self.run(&copies, &placement.step.jobs);
                self.seqs.insert(id, Seq { tokens, spans });
                self.accepted += 1;
            }
            Err(_) => self.refused += 1,
        }
    }

    fn grow(&mut self, rng: &mut Rng) {
        let Some(&id) = self.seqs.keys().nth(rng.index(self.seqs.len().max(1))) else {
            return;
        };
        let s = &self.seqs[&id];
        let end = s.spans.last().map_or(0, Span::end_pos);
        let mut tokens = s.tokens.clone();
        while (tokens.len() as u32) < end + 1 + pick(rng, 2) {
            tokens.push(pick(rng, 3));
        }
        let target = tokens.len() as u32;
        let (answer, spans) = if rng.range_inclusive(0, 1) == 0 {
            let mut last = s.spans.last().expect("spans").clone();
            last.len += 1 + pick(rng, target - end);
            let need = (last.first_slot + last.len).div_ceil(self.block_size) as usize;
            while last.blocks.len() < need {
                last.blocks.push(pick(rng, self.num_blocks));
            }
            let mut spans = s.spans.clone();
            *spans.last_mut().expect("spans") = last.clone();
            (Growth::Grown(last), spans)
        } else {
            // Keep a random subset of the spans, then new spans up to a new end.
            let mut spans: Vec<Span> = s
                .spans
                .iter()
                .filter(|_| rng.range_inclusive(0, 3) != 0)
                .cloned()
                .collect();
            let from = spans
                .last()
                .map_or(0, Span::end_pos)
                .max(end.saturating_sub(pick(rng, 2)));
            let new_end = (end + 1 + pick(rng, 2)).min(target);
            if new_end > from {
                spans.extend(self.context(rng, new_end - from).into_iter().map(|mut sp| {
                    sp.start_pos += from;
                    sp.rotated_pos += from;
                    sp
                }));
            }
            (
                Growth::Replaced(Context {
                    spans: spans.clone().into(),
                    copies: self.copies(rng).into(),
                }),
                spans,
            )
        };
        let checked = match &answer {
            Growth::Grown(span) => self.ledger.check_grown(id, &tokens, span.clone()),
            Growth::Replaced(c) => {
                self.ledger
                    .check_replaced(id, &tokens, c.spans.to_vec(), c.copies.to_vec())
            }
            Growth::NoRoom => unreachable!(),
        };
        match checked {
            Ok(checked) => {
                let grown = self.ledger.apply(checked);
                self.log.push(format!("grow {id} {tokens:?} {answer:?}"));
                self.run(&grown.copies, &grown.jobs);
                let s = self.seqs.get_mut(&id).expect("live");
                s.tokens = tokens[..grown.placed].to_vec();
                s.spans = spans;
                self.accepted += 1;
            }
            Err(_) => self.refused += 1,
        }
    }
}

#[test]
fn random_plans_never_panic_and_accepted_ones_keep_the_pool_invariant() {
    let cases: u64 = std::env::var("NANOHOST_LEDGER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut rng = Rng::derive(7, "ledger-fuzz");
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..cases {
        let (block_size, num_blocks) = (1 + pick(&mut rng, 4), 2 + pick(&mut rng, 10));
        let mut w = World {
            ledger: Ledger::new(num_blocks as usize, block_size as usize),
            shadow: vec![None; (num_blocks * block_size) as usize],
            seqs: std::collections::BTreeMap::new(),
            block_size,
            num_blocks,
            next_id: 0,
            accepted: 0,
            refused: 0,
            log: Vec::new(),
        };
        for _ in 0..12 {
            match pick(&mut rng, 6) {
                0 | 1 => w.admit(&mut rng),
                2..=4 => w.grow(&mut rng),
                _ => {
                    if let Some(&id) = w.seqs.keys().next() {
                        w.log.push(format!("release {id}"));
                        w.seqs.remove(&id);
                        w.ledger.release(id).unwrap();
                    }
                    w.ledger.begin_step();
                }
            }
            w.check();
        }
        accepted += w.accepted;
        refused += w.refused;
    }
    eprintln!("ledger fuzz: {cases} scenarios, {accepted} plans accepted, {refused} refused");
    // The generator must reach both sides of the rules, or the test shows nothing.
    assert!(
        accepted * 20 > accepted + refused && refused * 20 > accepted + refused,
        "{accepted} accepted, {refused} refused"
    );
}
