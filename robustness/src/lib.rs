//! kvd's robustness suite: real clusters, injected faults, recorded
//! histories, and checkers for linearizability, lost writes, the watch
//! guarantees and convergence (issue 9). `make robustness` runs the CI
//! profile, `make soak MINUTES=60` the long one.
//!
//! - [`history`]: what a run records; [`workload`]: clients and watchers;
//! - [`cluster`] and [`proxy`]: members behind userspace UDP proxies;
//! - [`scenarios`]: the faults; [`runner`]: one scenario end to end;
//! - [`checks`] (with [`porcupine`]): the verdicts; [`report`]: the table.

pub mod checks;
pub mod cluster;
pub mod history;
pub mod porcupine;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod workload;
