// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The VMM: configuration, the REST API, the VM lifecycle and the vCPU loop.
//!
//! Threads: the control loop (the caller of [`run`]) owns the VM and answers
//! API requests; the API thread parses HTTP; the vCPU thread runs the guest
//! and is the only writer of guest-visible state; a timer thread kicks the
//! vCPU when the APIC timer is due; a stdin thread feeds `--serial tty`;
//! a signal thread turns `SIGTERM`/`SIGINT` into a clean stop.

pub mod api;
pub mod boot;
pub mod clock;
pub mod config;
pub mod cpuid;
pub mod device_manager;
pub mod dirty_log;
pub mod ft_seed;
pub mod layout;
pub mod memory;
pub mod migration;
pub mod signals;
pub mod snapshot;
pub mod stdin;
pub mod vcpu;
pub mod vm;

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};

use hypervisor::kvm::KvmHypervisor;
use hypervisor::Hypervisor;

use api::{ApiMessage, ApiRequest, ApiResponse, ApiResponsePayload};
use config::cli::VmmArgs;
use config::VmConfig;
use vcpu::VcpuEnd;
use vm::{Vm, VmError, VmState};

/// The version reported by `vmm.ping` and `--version`.
pub const VMM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What reaches the control loop.
#[derive(Debug)]
pub enum ControlEvent {
    /// An API request.
    Api(ApiMessage),
    /// The vCPU thread ended.
    VcpuEnded(VcpuEnd),
    /// `SIGTERM` or `SIGINT` arrived: stop cleanly and exit.
    Signal(i32),
    /// The outgoing live migration ended: the guest runs on the
    /// destination, or it failed (why) and runs here still.
    MigrationEnded(Result<(), String>),
    /// A primary's backup reported that its replay diverged: the VM runs
    /// unprotected and the backup is to be seeded again.
    BackupDiverged,
    /// Re-seed attempt `attempt` (1-based) of a diverged backup.
    Reseed {
        /// Which attempt.
        attempt: u32,
    },
    /// A live ex-backup seeds one of its spares (`spares=`).
    SpareSeed(ft_seed::spares::Attempt),
}

/// Errors of the VMM as a whole, and of API actions.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// KVM could not be opened.
    #[error("cannot use the hypervisor")]
    Hypervisor(#[source] hypervisor::HypervisorError),
    /// The API socket could not be served.
    #[error("cannot start the HTTP API server")]
    ApiServer(#[source] api::http::ApiServerError),
    /// The event monitor file could not be opened.
    #[error("cannot open the event monitor file {path}")]
    EventMonitor {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The event monitor could not be set up.
    #[error("cannot set up the event monitor")]
    EventMonitorSetup(#[source] event_monitor::Error),
    /// An answer could not be serialised.
    #[error("cannot serialise the answer")]
    Serialize(#[source] serde_json::Error),
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot handle termination signals")]
    Signals(#[source] signals::SignalError),
    /// No VM configuration exists.
    #[error("VM is not created")]
    VmNotCreated,
    /// A VM configuration exists already.
    #[error("VM is already created")]
    VmAlreadyCreated,
    /// The VM is not booted.
    #[error("VM is not booted")]
    VmNotBooted,
    /// A VM operation failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The vCPU stopped on an error.
    #[error("the VM stopped on an error")]
    VcpuFailed(#[source] vcpu::VcpuError),
    /// A live migration could not be started or received.
    #[error(transparent)]
    Migration(#[from] migration::MigrationError),
    /// The control channel closed.
    #[error("the control channel closed unexpectedly")]
    ChannelClosed,
    /// FT VMotion failed.
    #[error("FT VMotion failed")]
    Vmotion(#[source] ft_seed::VmotionError),
}

/// An action's error for the API: "no VM" is the API's own marker type
/// (answered with 404, as upstream); the rest go as they are.
fn boxed(e: VmmError) -> Box<dyn std::error::Error + Send + Sync> {
    match e {
        VmmError::VmNotCreated => Box::new(api::VmNotCreated),
        e => Box::new(e),
    }
}

/// What the control loop does after an event.
enum Next {
    Continue,
    Exit,
}

/// The VMM's control state.
struct Vmm {
    hypervisor: Box<dyn Hypervisor>,
    config: Option<VmConfig>,
    vm: Option<Vm>,
    events_tx: Sender<ControlEvent>,
    /// The last live migration's status (either end).
    migration: Option<migration::SharedStatus>,
    /// A primary: its pair's request and the repairs of its backup.
    reseeds: ft_seed::reseed::Reseeds,
    /// A backup: how to wait for a seed again after a divergence.
    backup_request: Option<ft_seed::options::FtReceiveBackupConfig>,
    /// A backup: the spares it seeds by itself once live after a failover.
    spares: ft_seed::spares::Spares,
}

/// Restores the terminal however [`run`] returns (or unwinds).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        stdin::restore_terminal();
    }
}

/// Runs the VMM until the guest powers off, `vmm.shutdown` is called or
/// `SIGTERM`/`SIGINT` arrives.
pub fn run(args: VmmArgs) -> Result<(), VmmError> {
    let _terminal = TerminalGuard;
    if let Some(path) = &args.event_monitor {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|source| VmmError::EventMonitor {
                path: path.clone(),
                source,
            })?;
        event_monitor::set_monitor(file).map_err(VmmError::EventMonitorSetup)?;
    }
    event_monitor::event!("vmm", "starting");
    let hypervisor = KvmHypervisor::new().map_err(VmmError::Hypervisor)?;
    let (events_tx, events_rx) = mpsc::channel();
    signals::install(events_tx.clone()).map_err(VmmError::Signals)?;
    let mut vmm = Vmm {
        hypervisor: Box::new(hypervisor),
        config: None,
        vm: None,
        events_tx: events_tx.clone(),
        migration: None,
        reseeds: ft_seed::reseed::Reseeds::default(),
        backup_request: None,
        spares: ft_seed::spares::Spares::default(),
    };
    let api_server = match &args.api_socket {
        Some(path) => {
            let tx = events_tx.clone();
            let server = api::http::ApiServer::bind(path).map_err(VmmError::ApiServer)?;
            let handle = server
                .spawn(Box::new(move |m| tx.send(ControlEvent::Api(m)).is_ok()))
                .map_err(VmmError::ApiServer)?;
            Some(handle)
        }
        None => None,
    };
    if let Some(config) = args.vm_config {
        vmm.config = Some(config);
        vmm.vm_boot()?;
    }
    if let Some(restore) = &args.restore {
        vmm.vm_restore(restore)?;
    }
    let result = vmm.control_loop(&events_rx);
    if let Some(handle) = api_server {
        // Removes the socket file, as upstream does on exit.
        handle.shutdown();
    }
    if let Some(mut vm) = vmm.vm.take() {
        let _ = vm.shutdown();
    }
    stdin::restore_terminal();
    event_monitor::event!("vmm", "shutdown");
    result
}

impl Vmm {
    fn control_loop(&mut self, rx: &Receiver<ControlEvent>) -> Result<(), VmmError> {
        loop {
            let event = rx.recv().map_err(|_| VmmError::ChannelClosed)?;
            match self.handle_event(event)? {
                Next::Continue => {}
                Next::Exit => return Ok(()),
            }
        }
    }

    fn handle_event(&mut self, event: ControlEvent) -> Result<Next, VmmError> {
        match event {
            ControlEvent::Api(msg) => {
                let exit = matches!(msg.request, ApiRequest::VmmShutdown);
                let response = self.handle_request(msg.request);
                let _ = msg.response_tx.send(response);
                Ok(if exit { Next::Exit } else { Next::Continue })
            }
            ControlEvent::Signal(signal) => {
                log::info!("{} received: shutting down", signals::signal_name(signal));
                if let Some(mut vm) = self.vm.take() {
                    let _ = vm.shutdown();
                    event_monitor::event!("vm", "shutdown");
                }
                Ok(Next::Exit)
            }
            ControlEvent::MigrationEnded(Ok(())) => {
                // As upstream: the guest runs on the destination; this VM
                // is shut down and the VMM exits.
                log::info!("the VM runs on the migration destination: exiting");
                if let Some(mut vm) = self.vm.take() {
                    let _ = vm.shutdown();
                }
                event_monitor::event!("vm", "shutdown");
                Ok(Next::Exit)
            }
            ControlEvent::MigrationEnded(Err(e)) => {
                log::warn!("the migration failed; the VM keeps running here: {e}");
                Ok(Next::Continue)
            }
            ControlEvent::VcpuEnded(end) => match end {
                VcpuEnd::Stopped => Ok(Next::Continue),
                VcpuEnd::Shutdown => {
                    log::info!("the guest powered off");
                    if let Some(mut vm) = self.vm.take() {
                        let _ = vm.shutdown();
                    }
                    event_monitor::event!("vm", "shutdown");
                    Ok(Next::Exit)
                }
                VcpuEnd::Reset => {
                    log::info!("the guest asked for a reset: rebooting");
                    self.vm_reboot()?;
                    Ok(Next::Continue)
                }
                VcpuEnd::Error(e) => {
                    if let Some(mut vm) = self.vm.take() {
                        let _ = vm.shutdown();
                    }
                    match self.backup_request.clone() {
                        Some(req) if ft_seed::reseed::is_divergence(&e) => {
                            // The primary was told and seeds this VMM
                            // again: wait for it with the same settings.
                            log::warn!(
                                "fault tolerance: {}; waiting for the primary's seed again",
                                ft_backend::error_chain(&e)
                            );
                            event_monitor::event!("vm", "ft-backup-diverged");
                            self.config = None;
                            self.vm_ft_receive_backup(&req)?;
                            Ok(Next::Continue)
                        }
                        _ => Err(VmmError::VcpuFailed(e)),
                    }
                }
            },
            ControlEvent::BackupDiverged => {
                let r = &mut self.reseeds;
                r.divergences += 1;
                r.failed = 0;
                r.abandoned = false;
                if r.request.is_some() {
                    ft_seed::reseed::schedule(self.events_tx.clone(), 1);
                }
                Ok(Next::Continue)
            }
            ControlEvent::Reseed { attempt } => {
                self.reseed(attempt);
                Ok(Next::Continue)
            }
            ControlEvent::SpareSeed(attempt) => {
                self.seed_spare(attempt);
                Ok(Next::Continue)
            }
        }
    }

    fn handle_request(&mut self, request: ApiRequest) -> ApiResponse {
        let empty = |r: Result<(), VmmError>| r.map(|()| ApiResponsePayload::Empty).map_err(boxed);
        match request {
            // Serialised from the structs, so that the fields come in
            // upstream's order (a serde_json::Value would sort them).
            ApiRequest::VmmPing => serde_json::to_string(&api::VmmPingResponse::current())
                .map(ApiResponsePayload::JsonText)
                .map_err(|e| boxed(VmmError::Serialize(e))),
            ApiRequest::VmmShutdown => {
                if let Some(mut vm) = self.vm.take() {
                    let _ = vm.shutdown();
                }
                Ok(ApiResponsePayload::Empty)
            }
            ApiRequest::VmCreate(config) => empty(self.vm_create(*config)),
            ApiRequest::VmBoot => empty(self.vm_boot()),
            ApiRequest::VmDelete => empty(self.vm_delete()),
            ApiRequest::VmShutdown => empty(self.vm_shutdown()),
            ApiRequest::VmReboot => empty(self.vm_reboot()),
            ApiRequest::VmPause => empty(self.vm_pause()),
            ApiRequest::VmResume => empty(self.vm_resume()),
            ApiRequest::VmInfo => self
                .vm_info()
                .map(ApiResponsePayload::JsonText)
                .map_err(boxed),
            ApiRequest::VmCounters => self
                .vm_counters()
                .map(ApiResponsePayload::Json)
                .map_err(boxed),
            ApiRequest::VmSnapshot(c) => empty(self.vm_snapshot(&c)),
            ApiRequest::VmRestore(c) => empty(self.vm_restore(&c)),
            ApiRequest::VmSendMigration(c) => empty(self.vm_send_migration(&c)),
            ApiRequest::VmReceiveMigration(c) => empty(self.vm_receive_migration(&c)),
            ApiRequest::VmFtAddBackup(c) => empty(self.vm_ft_add_backup(&c)),
            ApiRequest::VmFtReceiveBackup(c) => empty(self.vm_ft_receive_backup(&c)),
        }
    }

    fn vm_create(&mut self, config: VmConfig) -> Result<(), VmmError> {
        if self.config.is_some() {
            return Err(VmmError::VmAlreadyCreated);
        }
        self.config = Some(config);
        Ok(())
    }

    fn vm_boot(&mut self) -> Result<(), VmmError> {
        let config = self.config.as_ref().ok_or(VmmError::VmNotCreated)?;
        if self.vm.is_some() {
            return Err(VmmError::VmAlreadyCreated);
        }
        event_monitor::event!("vm", "booting");
        let vm = Vm::boot(self.hypervisor.as_ref(), config, self.events_tx.clone())?;
        // A pair's side repairs a divergence as a seeded one does.
        self.backup_request = ft_seed::reseed::receive_request(config);
        if let Some(req) = ft_seed::reseed::add_request(config) {
            self.reseeds.request = Some(req);
            if let Some(status) = vm.pair_status.clone() {
                ft_seed::reseed::watch(status, self.events_tx.clone());
            }
        }
        self.vm = Some(vm);
        self.spares_for_new_vm();
        event_monitor::event!("vm", "booted");
        Ok(())
    }

    fn booted(&mut self) -> Result<&mut Vm, VmmError> {
        if self.config.is_none() {
            return Err(VmmError::VmNotCreated);
        }
        self.vm.as_mut().ok_or(VmmError::VmNotBooted)
    }

    /// Refuses an action that would change the VM's run state under an
    /// outgoing migration.
    fn not_migrating(&self) -> Result<(), VmmError> {
        match &self.migration {
            Some(m) if migration::lock(m).active() => {
                Err(migration::MigrationError::InProgress.into())
            }
            _ => Ok(()),
        }
    }

    /// `vm.send-migration`: answers once the destination is reached; the
    /// migration goes on in a worker thread.
    fn vm_send_migration(&mut self, c: &api::SendMigrationData) -> Result<(), VmmError> {
        let url = migration::MigrationUrl::parse(&c.destination_url)?;
        if c.local {
            return Err(migration::MigrationError::Url {
                url: c.destination_url.clone(),
                why: "local=on (shared memory) is not supported; migrate without it".into(),
            }
            .into());
        }
        self.not_migrating()?;
        let config = self.config.clone().ok_or(VmmError::VmNotCreated)?;
        let defaults = vm_migration::migration::Params::default();
        let params = vm_migration::migration::Params {
            downtime_ms: c.downtime_ms.unwrap_or(defaults.downtime_ms),
            timeout_s: c.timeout_s.unwrap_or(defaults.timeout_s),
            max_iterations: defaults.max_iterations,
        };
        let status = migration::MigrationStatus::new(
            migration::Role::Source,
            &c.destination_url,
            c.key.is_some(),
        );
        let events = self.events_tx.clone();
        let vm = self.booted()?;
        migration::source::start(
            vm,
            &config,
            migration::source::SendRequest {
                url,
                key: c.key.clone(),
                params,
            },
            status.clone(),
            events,
        )?;
        self.migration = Some(status);
        Ok(())
    }

    /// `vm.receive-migration`: blocks until the guest runs here or the
    /// migration failed (then no VM exists), as upstream.
    fn vm_receive_migration(&mut self, c: &api::ReceiveMigrationData) -> Result<(), VmmError> {
        let url = migration::MigrationUrl::parse(&c.receiver_url)?;
        if self.config.is_some() || self.vm.is_some() {
            return Err(migration::MigrationError::VmExists.into());
        }
        let listener = migration::transport::listen(&url, c.key.as_deref())?;
        log::info!("migration: waiting for the source on {}", c.receiver_url);
        event_monitor::event!("vm", "migration-receive-ready");
        let status = migration::MigrationStatus::new(
            migration::Role::Destination,
            &c.receiver_url,
            c.key.is_some(),
        );
        self.migration = Some(status.clone());
        let fail = |e: VmmError| {
            let text = migration::error_chain(&e);
            let mut s = migration::lock(&status);
            s.phase = vm_migration::migration::Phase::Failed;
            s.error = Some(text.clone());
            event_monitor::event!("vm", "migration-receive-failed", "error", text);
            e
        };
        let mut conn = migration::transport::accept(&listener, c.key.as_deref())
            .map_err(|e| fail(e.into()))?;
        drop(listener);
        log::info!("migration: receiving from {}", conn.peer);
        event_monitor::event!("vm", "migration-receive-started");
        migration::lock(&status).phase = vm_migration::migration::Phase::PreCopy;
        let start = std::time::Instant::now();
        let mut sink =
            migration::sink::VmSink::new(self.hypervisor.as_ref(), self.events_tx.clone());
        let received =
            vm_migration::migration::receive(&mut conn.reader, &mut conn.writer, &mut sink);
        drop(conn);
        match (received, sink.done.take()) {
            (Ok(()), Some((config, vm))) => {
                log::info!("migration: received in {:?}; the VM runs", start.elapsed());
                migration::lock(&status).phase = vm_migration::migration::Phase::Completed;
                self.config = Some(config);
                self.vm = Some(vm);
                event_monitor::event!("vm", "migration-receive-completed");
                Ok(())
            }
            (Ok(()), None) => Err(fail(VmmError::ChannelClosed)),
            (Err(e), _) => Err(fail(migration::MigrationError::Migration(e).into())),
        }
    }

    fn vm_pause(&mut self) -> Result<(), VmmError> {
        self.not_migrating()?;
        let vm = self.booted()?;
        event_monitor::event!("vm", "pausing");
        vm.pause()?;
        event_monitor::event!("vm", "paused");
        Ok(())
    }

    fn vm_resume(&mut self) -> Result<(), VmmError> {
        self.not_migrating()?;
        let vm = self.booted()?;
        event_monitor::event!("vm", "resuming");
        vm.resume()?;
        event_monitor::event!("vm", "resumed");
        Ok(())
    }

    fn vm_snapshot(&mut self, c: &api::VmSnapshotConfig) -> Result<(), VmmError> {
        let dir = snapshot::url_dir(&c.destination_url).map_err(VmError::from)?;
        self.not_migrating()?;
        let config = self.config.clone().ok_or(VmmError::VmNotCreated)?;
        let vm = self.booted()?;
        event_monitor::event!("vm", "snapshotting");
        let start = std::time::Instant::now();
        let bytes = vm.snapshot(&config, &dir)?;
        log::info!(
            "snapshot of {bytes} bytes written to {} in {:?}",
            dir.display(),
            start.elapsed()
        );
        event_monitor::event!("vm", "snapshotted");
        Ok(())
    }

    /// `vm.restore` and `--restore`: only when no VM exists (upstream).
    fn vm_restore(&mut self, c: &api::RestoreConfig) -> Result<(), VmmError> {
        if self.config.is_some() || self.vm.is_some() {
            return Err(VmmError::VmAlreadyCreated);
        }
        let dir = snapshot::url_dir(&c.source_url).map_err(VmError::from)?;
        event_monitor::event!("vm", "restoring");
        let start = std::time::Instant::now();
        let loaded = snapshot::load(&dir).map_err(VmError::from)?;
        let vm = Vm::restore(self.hypervisor.as_ref(), &loaded, self.events_tx.clone())?;
        log::info!(
            "restored from {} in {:?}, paused",
            dir.display(),
            start.elapsed()
        );
        self.config = Some(loaded.config);
        self.vm = Some(vm);
        event_monitor::event!("vm", "restored");
        if c.resume {
            self.vm_resume()?;
        }
        Ok(())
    }

    /// FT VMotion, primary side: this running VM gets a new backup.
    fn vm_ft_add_backup(
        &mut self,
        c: &ft_seed::options::FtAddBackupConfig,
    ) -> Result<(), VmmError> {
        let config = self.config.clone().ok_or(VmmError::VmNotCreated)?;
        // A live migration tracks the same dirty pages (the devices'
        // tracker is the process's).
        if self
            .migration
            .as_ref()
            .is_some_and(|m| migration::lock(m).active())
        {
            return Err(VmmError::Vmotion(ft_seed::VmotionError::Busy(
                "migrating".into(),
            )));
        }
        let vm = self.booted()?;
        event_monitor::event!("vm", "ft-adding-backup");
        let added = ft_seed::primary::add_backup(vm, &config, c);
        let status = vm.pair_status.clone();
        // A diverged backup is seeded again with this request (also when
        // the backup did not confirm the stream: a divergence can follow).
        if !matches!(
            added,
            Err(ft_seed::VmotionError::NotRunning(_) | ft_seed::VmotionError::Busy(_))
        ) {
            self.reseeds.request = Some(c.clone());
        }
        if let Some(status) = status.filter(|_| added.is_ok()) {
            ft_seed::reseed::watch(status, self.events_tx.clone());
        }
        let report = added.map_err(VmmError::Vmotion)?;
        log::info!(
            "FT VMotion: {} bytes sent in {:.1} ms, the guest paused {:.1} ms (last pages {:.1} ms)",
            report.bytes,
            report.total_ms,
            report.pause_ms,
            report.memory_ms
        );
        event_monitor::event!("vm", "ft-backup-added");
        Ok(())
    }

    /// FT VMotion, backup side: waits with no VM for a primary's seed,
    /// then runs as its backup. Answers once the backup runs.
    fn vm_ft_receive_backup(
        &mut self,
        c: &ft_seed::options::FtReceiveBackupConfig,
    ) -> Result<(), VmmError> {
        if self.config.is_some() || self.vm.is_some() {
            return Err(VmmError::VmAlreadyCreated);
        }
        event_monitor::event!("vm", "ft-receiving-backup");
        let (config, vm) = ft_seed::backup::receive_backup(
            self.hypervisor.as_ref(),
            c,
            self.events_tx.clone(),
            &signals::received,
        )
        .map_err(VmmError::Vmotion)?;
        self.config = Some(config);
        self.vm = Some(vm);
        self.backup_request = Some(c.clone());
        self.spares_for_new_vm();
        event_monitor::event!("vm", "ft-backup-received");
        Ok(())
    }

    /// Re-seed attempt `attempt` of the backup whose replay diverged: FT
    /// VMotion to it again with the pair's request. A failure schedules the
    /// next attempt, up to [`ft_seed::reseed::MAX_ATTEMPTS`]; then the VM
    /// stays unprotected.
    fn reseed(&mut self, attempt: u32) {
        let Some(req) = self.reseeds.request.clone() else {
            return;
        };
        let Some(status) = self.vm.as_ref().and_then(|vm| vm.pair_status.clone()) else {
            return;
        };
        if status.state() != ft_backend::pair::PairState::LiveUnprotected {
            // Protected again, or stopping: nothing to repair.
            return;
        }
        status.event(
            "reseed-started",
            &[("attempt", attempt.to_string()), ("peer", req.peer.clone())],
        );
        match self.vm_ft_add_backup(&req) {
            Ok(()) => {
                let r = &mut self.reseeds;
                r.reseeded += 1;
                r.failed = 0;
                r.last_error = None;
            }
            Err(e) => {
                let why = ft_backend::error_chain(&e);
                log::warn!("fault tolerance: re-seed attempt {attempt} failed: {why}");
                self.reseeds.failed = attempt;
                self.reseeds.last_error = Some(why.clone());
                status.event(
                    "reseed-failed",
                    &[("attempt", attempt.to_string()), ("reason", why)],
                );
                if attempt < ft_seed::reseed::MAX_ATTEMPTS {
                    ft_seed::reseed::schedule(self.events_tx.clone(), attempt + 1);
                } else {
                    self.reseeds.abandoned = true;
                    log::error!(
                        "fault tolerance: the backup could not be seeded again after {attempt} attempts: the VM runs unprotected"
                    );
                    status.event("reseed-abandoned", &[("attempts", attempt.to_string())]);
                }
            }
        }
    }

    fn vm_shutdown(&mut self) -> Result<(), VmmError> {
        let vm = self.booted()?;
        vm.shutdown()?;
        self.vm = None;
        event_monitor::event!("vm", "shutdown");
        Ok(())
    }

    fn vm_reboot(&mut self) -> Result<(), VmmError> {
        event_monitor::event!("vm", "rebooting");
        self.vm_shutdown()?;
        self.vm_boot()?;
        event_monitor::event!("vm", "rebooted");
        Ok(())
    }

    fn vm_delete(&mut self) -> Result<(), VmmError> {
        if self.config.is_none() {
            return Err(VmmError::VmNotCreated);
        }
        if let Some(mut vm) = self.vm.take() {
            vm.shutdown()?;
        }
        self.config = None;
        event_monitor::event!("vm", "deleted");
        Ok(())
    }

    fn vm_info(&self) -> Result<String, VmmError> {
        let config = self.config.as_ref().ok_or(VmmError::VmNotCreated)?;
        let (state, memory_actual_size, device_tree) = match &self.vm {
            Some(vm) => vm.info(),
            None => (VmState::Created, config.memory.size, Default::default()),
        };
        let mut fault_tolerance = self.vm.as_ref().and_then(Vm::fault_tolerance_info);
        if let Some(map) = fault_tolerance
            .as_mut()
            .and_then(serde_json::Value::as_object_mut)
            .filter(|_| self.reseeds.divergences > 0)
        {
            map.insert("reseed".into(), self.reseeds.info());
        }
        if let Some(map) = fault_tolerance
            .as_mut()
            .and_then(serde_json::Value::as_object_mut)
            .filter(|_| !self.spares.list.is_empty())
        {
            map.insert("spares".into(), self.spares.info());
        }
        let migration = self.migration.as_ref().map(|m| migration::lock(m).info());
        let state = match state {
            VmState::Created => api::VmState::Created,
            VmState::Running => api::VmState::Running,
            VmState::Paused => api::VmState::Paused,
            VmState::Shutdown => api::VmState::Shutdown,
        };
        serde_json::to_string(&api::VmInfoResponse {
            config: Box::new(config.clone()),
            state,
            memory_actual_size,
            device_tree: Some(device_tree),
            fault_tolerance,
            migration,
        })
        .map_err(VmmError::Serialize)
    }

    fn vm_counters(&self) -> Result<serde_json::Value, VmmError> {
        if self.config.is_none() {
            return Err(VmmError::VmNotCreated);
        }
        let vm = self.vm.as_ref().ok_or(VmmError::VmNotBooted)?;
        let mut counters = vm.counters();
        if let (Some(m), Some(map)) = (&self.migration, counters.as_object_mut()) {
            map.insert("migration".into(), migration::lock(m).info());
        }
        Ok(counters)
    }
}
