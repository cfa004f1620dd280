//! Native code behind the runtime seam: [`NativeRuntime`] reads ELF and DWARF
//! ([`Target`]) and attaches with a [`Session`] (ptrace and eBPF uprobes).

use crate::resolve::{resolve, resolve_or_pending};
use crate::target::{Target, TargetCache};
use crate::Session;
use periscope_runtime::{
    Attachment, Capabilities, Capability, Code, EngineEvent, EngineUsed, FunctionInfo,
    MessageMatch, ProbeSpec, Runtime, RuntimeError, RuntimeKind, SessionOptions, SourceListing,
    Summary, Tallies, WatchSignals,
};
use std::any::Any;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// The native runtime: Rust, C, C++ and Go on Linux x86-64.
#[derive(Default)]
pub struct NativeRuntime {
    /// Programs indexed for code views, per executable and build id.
    cache: TargetCache,
}

/// A process's (or a file's) objects, indexed.
struct NativeCode(Target);

impl NativeRuntime {
    fn target_of(code: &Arc<dyn Code>) -> Result<Target, RuntimeError> {
        code.as_any()
            .downcast_ref::<NativeCode>()
            .map(|c| c.0.clone())
            .ok_or_else(|| RuntimeError::other("this code was not read by the native runtime"))
    }
}

impl Runtime for NativeRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Native
    }

    fn capabilities(&self) -> Capabilities {
        use Capability::*;
        Capabilities::new(
            RuntimeKind::Native,
            [
                Log,
                Snapshot,
                Count,
                Duration,
                Gauge,
                Watch,
                VerifyShadow,
                VerifyReplay,
                KernelEngine,
            ],
        )
    }

    fn open_process(&self, pid: u32) -> Result<Arc<dyn Code>, RuntimeError> {
        Ok(Arc::new(NativeCode(Target::attach_view(pid)?)))
    }

    fn open_instance(
        &self,
        pid: u32,
        executable: &str,
        build_id: Option<&str>,
    ) -> Result<Arc<dyn Code>, RuntimeError> {
        let target = self.cache.of_process(pid, executable, build_id)?;
        Ok(Arc::new(NativeCode(target)))
    }

    fn open_file(&self, path: &Path) -> Result<Arc<dyn Code>, RuntimeError> {
        Ok(Arc::new(NativeCode(Target::from_binary(path)?)))
    }

    fn attach(
        &self,
        code: &Arc<dyn Code>,
        probes: Vec<ProbeSpec>,
        options: SessionOptions,
    ) -> Result<Box<dyn Attachment>, RuntimeError> {
        let target = Self::target_of(code)?;
        let mut resolved = Vec::with_capacity(probes.len());
        for p in probes {
            resolved.push(resolve_or_pending(&target, p)?);
        }
        Ok(Box::new(Session::start_resolved(
            target, resolved, options,
        )?))
    }
}

impl Code for NativeCode {
    fn pid(&self) -> Option<u32> {
        self.0.pid
    }

    fn language(&self) -> Option<String> {
        self.0
            .main_object()
            .index
            .language()
            .map(|l| l.name().to_string())
    }

    fn build_id(&self) -> Option<String> {
        self.0.main_object().index.build_id.clone()
    }

    fn functions(&self, pattern: &str) -> Vec<FunctionInfo> {
        self.0.find_functions(pattern)
    }

    fn source_lines(
        &self,
        file: &str,
        range: Option<(u32, u32)>,
    ) -> Result<SourceListing, RuntimeError> {
        Ok(self.0.source_lines(file, range)?)
    }

    fn find_message(&self, message: &str) -> Vec<MessageMatch> {
        self.0.find_message(message)
    }

    fn check(&self, probe: &ProbeSpec) -> Result<usize, RuntimeError> {
        Ok(resolve(&self.0, probe.clone())?.sites.len())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Attachment for Session {
    fn add_probe(&self, probe: ProbeSpec) -> Result<usize, RuntimeError> {
        Ok(Session::add_probe(self, probe)?)
    }

    fn remove_probe(&self, id: &str) -> bool {
        Session::remove_probe(self, id)
    }

    fn watch_signals(&self, watch: Option<WatchSignals>) {
        Session::watch_signals(self, watch)
    }

    fn events(&self) -> &Receiver<EngineEvent> {
        &self.events
    }

    fn take_events(&mut self) -> Receiver<EngineEvent> {
        Session::take_events(self)
    }

    fn tallies(&self) -> Tallies {
        self.tallies.clone()
    }

    fn site_counts(&self) -> &[usize] {
        &self.site_counts
    }

    fn engines(&self) -> &[EngineUsed] {
        &self.engines
    }

    fn recovered(&self) -> usize {
        self.recovered
    }

    fn is_finished(&self) -> bool {
        Session::is_finished(self)
    }

    fn stop(self: Box<Self>) -> Summary {
        Session::stop(*self)
    }
}
