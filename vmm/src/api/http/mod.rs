// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The REST API server: HTTP/1.1 on a Unix socket.
//!
//! One thread accepts connections; each connection gets a thread of its
//! own (at most [`MAX_CONNECTIONS`] at once), so a slow or idle client
//! never blocks another. Connections are kept alive and may pipeline
//! requests. A client gets [`REQUEST_TIMEOUT`] to send a request and may
//! stay idle [`IDLE_TIMEOUT`] between requests. Requests reach the
//! control loop one at a time through the `submit` function, and the
//! connection thread waits for the answer.
//!
//! As upstream, the socket path is guarded by an exclusive lock on
//! `<path>.lock`: a second VMM on the same path fails with "in use",
//! and a socket left behind by a VMM that died is removed and replaced.

pub mod client;
mod request;
mod response;
mod routes;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, info, warn};
use thiserror::Error;

use self::request::{RequestError, RequestReader, Timeouts};
pub use self::request::{MAX_BODY_SIZE, MAX_HEAD_SIZE};
use self::response::Response;
pub use self::routes::{error_chain, HTTP_ROOT, UNIMPLEMENTED_ENDPOINTS};
use crate::api::ApiMessage;

/// Most connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may sit idle.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long writing an answer may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards a message to the control loop; `false` if the VMM is gone.
pub type ApiSubmitter = Box<dyn Fn(ApiMessage) -> bool + Send>;

/// Why the API server could not start.
#[derive(Debug, Error)]
pub enum ApiServerError {
    /// The lock file next to the socket could not be opened or locked.
    #[error("Cannot lock the API socket path {0:?}")]
    Lock(PathBuf, #[source] io::Error),
    /// Another VMM holds the lock: its API socket is live.
    #[error("The API socket {0:?} is in use by another process")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{0:?} exists and is not a socket")]
    NotASocket(PathBuf),
    /// A stale socket could not be removed.
    #[error("Cannot remove the stale API socket {0:?}")]
    RemoveStale(PathBuf, #[source] io::Error),
    /// bind() failed.
    #[error("Cannot bind the API socket {0:?}")]
    Bind(PathBuf, #[source] io::Error),
    /// The server thread could not be started.
    #[error("Cannot start the HTTP API thread")]
    Spawn(#[source] io::Error),
}

/// A bound API socket, not serving yet.
#[derive(Debug)]
pub struct ApiServer {
    listener: UnixListener,
    path: Option<PathBuf>,
    lock: Option<File>,
    timeouts: Timeouts,
}

const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    idle: IDLE_TIMEOUT,
    request: REQUEST_TIMEOUT,
};

fn lock_path(socket_path: &Path) -> PathBuf {
    let mut path = socket_path.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

fn acquire_lock(socket_path: &Path) -> Result<File, ApiServerError> {
    let path = lock_path(socket_path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ApiServerError::Lock(path.clone(), e))?;
    // SAFETY: flock on a descriptor owned by `file`, valid for the call.
    let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if ret < 0 {
        let error = io::Error::last_os_error();
        return Err(if error.kind() == io::ErrorKind::WouldBlock {
            ApiServerError::InUse(socket_path.to_path_buf())
        } else {
            ApiServerError::Lock(path, error)
        });
    }
    Ok(file)
}

impl ApiServer {
    /// Binds `socket_path`, replacing a stale socket left by a VMM that
    /// died, and refusing if another VMM serves on it.
    pub fn bind(socket_path: &Path) -> Result<Self, ApiServerError> {
        let lock = acquire_lock(socket_path)?;
        // We hold the lock: whatever socket is at the path is stale.
        match std::fs::symlink_metadata(socket_path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(socket_path)
                    .map_err(|e| ApiServerError::RemoveStale(socket_path.to_path_buf(), e))?;
                info!("Removed stale API socket {}", socket_path.display());
            }
            Ok(_) => return Err(ApiServerError::NotASocket(socket_path.to_path_buf())),
            Err(_) => {}
        }
        let listener = UnixListener::bind(socket_path)
            .map_err(|e| ApiServerError::Bind(socket_path.to_path_buf(), e))?;
        Ok(ApiServer {
            listener,
            path: Some(socket_path.to_path_buf()),
            lock: Some(lock),
            timeouts: DEFAULT_TIMEOUTS,
        })
    }

    /// Serves on an already bound listener (e.g. one inherited as a file
    /// descriptor). No lock is taken and no file is removed at shutdown.
    pub fn from_listener(listener: UnixListener) -> Self {
        ApiServer {
            listener,
            path: None,
            lock: None,
            timeouts: DEFAULT_TIMEOUTS,
        }
    }

    /// Replaces [`REQUEST_TIMEOUT`] and [`IDLE_TIMEOUT`].
    pub fn with_timeouts(mut self, request: Duration, idle: Duration) -> Self {
        self.timeouts = Timeouts { idle, request };
        self
    }

    /// Starts serving on a thread of its own.
    pub fn spawn(self, submit: ApiSubmitter) -> Result<ApiServerHandle, ApiServerError> {
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let wake_path = self.path.clone();
        // Only a server that bound the path itself removes it.
        let remove_on_shutdown = self.path.is_some();
        let local_addr = self.listener.local_addr().ok();
        let thread_stop = stop.clone();
        let thread_in_flight = in_flight.clone();
        let thread = thread::Builder::new()
            .name("http-server".to_string())
            .spawn(move || self.serve(submit, &thread_stop, thread_in_flight))
            .map_err(ApiServerError::Spawn)?;
        Ok(ApiServerHandle {
            thread: Some(thread),
            stop,
            in_flight,
            path: wake_path
                .or_else(|| local_addr.and_then(|addr| addr.as_pathname().map(Path::to_path_buf))),
            remove_on_shutdown,
        })
    }

    fn serve(self, submit: ApiSubmitter, stop: &AtomicBool, in_flight: Arc<AtomicUsize>) {
        // Held until the server stops: the socket path is ours.
        let _lock = self.lock;
        let submit = Arc::new(Mutex::new(submit));
        let timeouts = self.timeouts;
        let active = Arc::new(AtomicUsize::new(0));
        for stream in self.listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    warn!("HTTP API: accept failed: {e}");
                    // Do not spin on a persistent error (e.g. EMFILE).
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::SeqCst);
                refuse_busy(stream);
                continue;
            }
            let submit = submit.clone();
            let active_conn = active.clone();
            let in_flight = in_flight.clone();
            let spawned = thread::Builder::new()
                .name("http-connection".to_string())
                .spawn(move || {
                    serve_connection(stream, &submit, timeouts, &in_flight);
                    active_conn.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                active.fetch_sub(1, Ordering::SeqCst);
                warn!("HTTP API: cannot start a connection thread: {e}");
            }
        }
        debug!("HTTP API server stopped");
    }
}

fn refuse_busy(mut stream: UnixStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let response = Response::error(503, ["Too many connections to the API socket"]);
    if let Err(e) = response.write_to(&mut stream, false) {
        debug!("HTTP API: cannot answer a refused connection: {e}");
    }
}

/// Counts a request from the moment it is read until its answer is written,
/// so that a shutting-down server can let answers (`vmm.shutdown`'s own)
/// reach their clients.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve_connection(
    stream: UnixStream,
    submit: &Mutex<ApiSubmitter>,
    timeouts: Timeouts,
    in_flight: &AtomicUsize,
) {
    if let Err(e) = stream.set_write_timeout(Some(WRITE_TIMEOUT)) {
        warn!("HTTP API: cannot set the write timeout: {e}");
        return;
    }
    let mut reader = RequestReader::new(stream, timeouts);
    loop {
        let request = reader.next_request();
        let _in_flight = InFlight::new(in_flight);
        let (response, keep_alive) = match request {
            Ok(None) => return,
            Ok(Some(request)) => {
                debug!("HTTP API: {} {}", request.method, request.path);
                let response =
                    routes::handle(&request.method, &request.path, &request.body, &|message| {
                        match submit.lock() {
                            Ok(submit) => submit(message),
                            Err(poisoned) => poisoned.into_inner()(message),
                        }
                    });
                (response, request.keep_alive)
            }
            Err(error) => {
                let status = match &error {
                    RequestError::Io(_) | RequestError::Truncated => {
                        debug!("HTTP API: {error}");
                        return;
                    }
                    RequestError::Timeout => 408,
                    RequestError::HeadTooLarge => 431,
                    RequestError::BodyTooLarge(_) => 413,
                    RequestError::Malformed(_) => 400,
                    RequestError::TransferEncoding => 501,
                };
                info!("HTTP API: bad request: {error}");
                (Response::error(status, error_chain(&error)), false)
            }
        };
        if let Err(e) = response.write_to(reader.stream(), keep_alive) {
            debug!("HTTP API: cannot write the answer: {e}");
            return;
        }
        if !keep_alive {
            return;
        }
    }
}

/// How long a stopping server waits for answers still being written.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running API server.
#[derive(Debug)]
pub struct ApiServerHandle {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    path: Option<PathBuf>,
    remove_on_shutdown: bool,
}

impl ApiServerHandle {
    /// Stops accepting connections, waits for the accept thread and for
    /// answers being written (at most [`SHUTDOWN_GRACE`]), and removes the
    /// socket file (for a server that bound it). Idle connections are left
    /// to the process's exit.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let start = std::time::Instant::now();
        while self.in_flight.load(Ordering::SeqCst) > 0 && start.elapsed() < SHUTDOWN_GRACE {
            thread::sleep(Duration::from_millis(2));
        }
        if let Some(path) = &self.path {
            // Wake the blocking accept().
            let _ = UnixStream::connect(path);
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("HTTP API thread panicked");
            }
        }
        if let (Some(path), true) = (&self.path, self.remove_on_shutdown) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Waits for the server thread without stopping it.
    pub fn into_join_handle(mut self) -> Option<JoinHandle<()>> {
        self.thread.take()
    }
}

/// Binds `socket_path` and serves the API on a new thread, forwarding
/// each request to the control loop through `submit`. The thread runs
/// until the process exits; use [`ApiServer`] for a server that can be
/// stopped.
pub fn start_http_thread(
    socket_path: &Path,
    submit: ApiSubmitter,
) -> Result<JoinHandle<()>, ApiServerError> {
    let handle = ApiServer::bind(socket_path)?.spawn(submit)?;
    handle
        .into_join_handle()
        .ok_or_else(|| ApiServerError::Spawn(io::Error::other("no server thread")))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicU32;
    use std::sync::mpsc;

    use super::client::{ApiClient, HttpResponse};
    use super::*;
    use crate::api::{
        ApiRequest, ApiResponsePayload, VmInfoResponse, VmNotCreated, VmState, VmmPingResponse,
    };
    use crate::config::VmConfig;

    /// A fresh directory for one test's socket.
    fn temp_dir(name: &str) -> PathBuf {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vmm-http-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// A control-loop double: a thread answering messages like a VMM with
    /// one VM slot. Returns the submitter to give the server.
    fn fake_vmm() -> ApiSubmitter {
        let (tx, rx) = mpsc::channel::<ApiMessage>();
        thread::spawn(move || {
            let mut vm: Option<(VmConfig, VmState)> = None;
            for message in rx {
                let answer: crate::api::ApiResponse = match (message.request, &mut vm) {
                    (ApiRequest::VmmPing, _) => Ok(ApiResponsePayload::Json(
                        serde_json::to_value(VmmPingResponse::current()).expect("ping"),
                    )),
                    (ApiRequest::VmCreate(config), None) => {
                        vm = Some((*config, VmState::Created));
                        Ok(ApiResponsePayload::Empty)
                    }
                    (ApiRequest::VmCreate(_), Some(_)) => Err("VM is already created".into()),
                    (ApiRequest::VmBoot, Some((_, state))) if *state == VmState::Created => {
                        *state = VmState::Running;
                        Ok(ApiResponsePayload::Empty)
                    }
                    (ApiRequest::VmBoot, Some(_)) => Err("VM is already booted".into()),
                    (ApiRequest::VmPause, Some((_, state))) => {
                        *state = VmState::Paused;
                        Ok(ApiResponsePayload::Empty)
                    }
                    (ApiRequest::VmInfo, Some((config, state))) => Ok(ApiResponsePayload::Json(
                        serde_json::to_value(VmInfoResponse {
                            config: Box::new(config.clone()),
                            state: *state,
                            memory_actual_size: config.memory.size,
                            device_tree: None,
                            fault_tolerance: None,
                            migration: None,
                        })
                        .expect("info"),
                    )),
                    (ApiRequest::VmCounters, Some(_)) => {
                        Ok(ApiResponsePayload::Json(serde_json::json!({})))
                    }
                    (ApiRequest::VmDelete, _) => {
                        vm = None;
                        Ok(ApiResponsePayload::Empty)
                    }
                    (ApiRequest::VmmShutdown, _) => Ok(ApiResponsePayload::Empty),
                    (ApiRequest::VmCounters, None) => Err(Box::new(VmNotCreated).into()),
                    (_, None) => Err(Box::new(VmNotCreated)),
                    (_, Some(_)) => Err("not in this test".into()),
                };
                let _ = message.response_tx.send(answer);
            }
        });
        Box::new(move |message| tx.send(message).is_ok())
    }

    fn body_json(response: &HttpResponse) -> serde_json::Value {
        serde_json::from_slice(&response.body).expect("JSON body")
    }

    const CONFIG: &str = r#"{"payload":{"kernel":"/path/guest.elf","cmdline":"x"},
        "memory":{"size":134217728},"cpus":{"boot_vcpus":1,"max_vcpus":1},
        "serial":{"mode":"File","file":"/path/serial.log"},"console":{"mode":"Off"}}"#;

    #[test]
    fn lifecycle_on_one_kept_alive_connection() {
        let dir = temp_dir("lifecycle");
        let path = dir.join("api.sock");
        let server = ApiServer::bind(&path)
            .expect("bind")
            .spawn(fake_vmm())
            .expect("spawn");
        let mut stream = ApiClient::new(UnixStream::connect(&path).expect("connect"));

        let ping = stream.request("GET", "vmm.ping", None).expect("ping");
        assert_eq!(ping.status, 200);
        let ping = body_json(&ping);
        assert_eq!(ping["pid"], i64::from(std::process::id()));
        assert_eq!(ping["features"], serde_json::json!(["kvm"]));

        let counters = stream
            .request("GET", "vm.counters", None)
            .expect("counters");
        assert_eq!(counters.status, 404);
        let info = stream.request("GET", "vm.info", None).expect("info");
        assert_eq!(info.status, 404);
        assert_eq!(
            body_json(&info),
            serde_json::json!([
                "Error from API",
                "The VM info is not available",
                "VM is not created"
            ])
        );

        let bad = stream
            .request("PUT", "vm.create", Some(b"{bogus"))
            .expect("create");
        assert_eq!(bad.status, 400);
        assert_eq!(
            body_json(&bad),
            serde_json::json!([
                "Failed to deserialize JSON",
                "key must be a string at line 1 column 2"
            ])
        );

        let create = stream
            .request("PUT", "vm.create", Some(CONFIG.as_bytes()))
            .expect("create");
        assert_eq!((create.status, create.body.len()), (204, 0));
        let boot = stream.request("PUT", "vm.boot", None).expect("boot");
        assert_eq!(boot.status, 204);
        let again = stream.request("PUT", "vm.boot", None).expect("boot");
        assert_eq!(again.status, 500);
        assert_eq!(
            body_json(&again),
            serde_json::json!([
                "Error from API",
                "The VM could not boot",
                "VM is already booted"
            ])
        );
        assert_eq!(
            stream
                .request("PUT", "vm.pause", None)
                .expect("pause")
                .status,
            204
        );

        let info = stream.request("GET", "vm.info", None).expect("info");
        assert_eq!(info.status, 200);
        let info = body_json(&info);
        assert_eq!(info["state"], "Paused");
        assert_eq!(info["memory_actual_size"], 134_217_728);
        assert_eq!(info["config"]["serial"]["file"], "/path/serial.log");
        assert_eq!(info["config"]["rng"]["src"], "/dev/urandom");

        let counters = stream
            .request("GET", "vm.counters", None)
            .expect("counters");
        assert_eq!(
            (counters.status, body_json(&counters)),
            (200, serde_json::json!({}))
        );
        let snapshot = stream
            .request("PUT", "vm.coredump", Some(b"{}"))
            .expect("coredump");
        assert_eq!(snapshot.status, 501);
        let shutdown = stream
            .request("PUT", "vmm.shutdown", None)
            .expect("shutdown");
        assert_eq!((shutdown.status, shutdown.body.len()), (200, 0));

        server.shutdown();
        assert!(!path.exists(), "the socket file is removed at shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pipelined_requests_and_connection_close() {
        let dir = temp_dir("pipeline");
        let path = dir.join("api.sock");
        let server = ApiServer::bind(&path)
            .expect("bind")
            .spawn(fake_vmm())
            .expect("spawn");
        let mut stream = ApiClient::new(UnixStream::connect(&path).expect("connect"));
        stream
            .stream()
            .write_all(
                b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n\
                  GET /api/v1/vm.bogus HTTP/1.1\r\n\r\n\
                  GET /api/v1/vmm.ping HTTP/1.1\r\nConnection: close\r\n\r\n",
            )
            .expect("write");
        assert_eq!(stream.read_response().expect("1").status, 200);
        let not_found = stream.read_response().expect("2");
        assert_eq!(
            (not_found.status, body_json(&not_found)),
            (404, serde_json::json!(["Not Found"]))
        );
        assert_eq!(stream.read_response().expect("3").status, 200);
        // The server closed the connection as asked.
        let mut rest = Vec::new();
        stream.stream().read_to_end(&mut rest).expect("eof");
        assert!(rest.is_empty());
        server.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_clients_do_not_wedge_the_server() {
        let dir = temp_dir("robust");
        let path = dir.join("api.sock");
        let server = ApiServer::bind(&path)
            .expect("bind")
            .with_timeouts(Duration::from_millis(300), Duration::from_millis(300))
            .spawn(fake_vmm())
            .expect("spawn");

        // A client that starts a request and stalls.
        let mut slow = ApiClient::new(UnixStream::connect(&path).expect("connect"));
        slow.stream()
            .write_all(b"GET /api/v1/vmm.pi")
            .expect("write");
        // Others are served meanwhile.
        let mut other = ApiClient::new(UnixStream::connect(&path).expect("connect"));
        let ping = other.request("GET", "vmm.ping", None).expect("ping");
        assert_eq!(ping.status, 200);
        // The stalled client is answered 408 and closed.
        let timeout = slow.read_response().expect("answer");
        assert_eq!(timeout.status, 408);

        // Garbage gets 400 and does not stop the server.
        let mut garbage = ApiClient::new(UnixStream::connect(&path).expect("connect"));
        garbage
            .stream()
            .write_all(b"\x00\x01\x02 nonsense\r\n\r\n")
            .expect("write");
        assert_eq!(garbage.read_response().expect("answer").status, 400);

        // An oversized body is refused before it is read.
        let mut big = ApiClient::new(UnixStream::connect(&path).expect("connect"));
        big.stream()
            .write_all(b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n")
            .expect("write");
        assert_eq!(big.read_response().expect("answer").status, 413);

        // Chunked bodies are refused clearly.
        let mut chunked = ApiClient::new(UnixStream::connect(&path).expect("connect"));
        chunked
            .stream()
            .write_all(b"PUT /api/v1/vm.create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect("write");
        let answer = chunked.read_response().expect("answer");
        assert_eq!(answer.status, 501);
        assert!(answer.body_text().contains("Content-Length"));

        // A client that connects and vanishes.
        drop(UnixStream::connect(&path).expect("connect"));

        let mut after = ApiClient::new(UnixStream::connect(&path).expect("connect"));
        assert_eq!(
            after.request("GET", "vmm.ping", None).expect("ping").status,
            200
        );
        server.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn too_many_connections_are_refused() {
        let dir = temp_dir("busy");
        let path = dir.join("api.sock");
        let server = ApiServer::bind(&path)
            .expect("bind")
            .spawn(fake_vmm())
            .expect("spawn");
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut stream = ApiClient::new(UnixStream::connect(&path).expect("connect"));
            // A ping proves the connection has its thread.
            assert_eq!(
                stream
                    .request("GET", "vmm.ping", None)
                    .expect("ping")
                    .status,
                200
            );
            held.push(stream);
        }
        let mut extra = ApiClient::new(UnixStream::connect(&path).expect("connect"));
        assert_eq!(extra.read_response().expect("answer").status, 503);
        held.clear();
        // Slots free up once the held connections close.
        let mut served = false;
        for _ in 0..100 {
            let mut stream = ApiClient::new(UnixStream::connect(&path).expect("connect"));
            if let Ok(answer) = stream.request("GET", "vmm.ping", None) {
                if answer.status == 200 {
                    served = true;
                    break;
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert!(served);
        server.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn socket_path_ownership() {
        let dir = temp_dir("ownership");
        let path = dir.join("api.sock");

        // A stale socket (its VMM died) is replaced.
        drop(UnixListener::bind(&path).expect("stale socket"));
        assert!(path.exists());
        let server = ApiServer::bind(&path).expect("bind over a stale socket");

        // A live one is not.
        match ApiServer::bind(&path) {
            Err(ApiServerError::InUse(p)) => assert_eq!(p, path),
            other => panic!("expected InUse, got {other:?}"),
        }
        let handle = server.spawn(fake_vmm()).expect("spawn");
        let mut stream = ApiClient::new(UnixStream::connect(&path).expect("connect"));
        assert_eq!(
            stream
                .request("GET", "vmm.ping", None)
                .expect("ping")
                .status,
            200
        );
        handle.shutdown();

        // Once released, the path can be bound again.
        let again = ApiServer::bind(&path).expect("rebind");
        drop(again);

        // A regular file is never removed.
        let file = dir.join("not-a-socket");
        std::fs::write(&file, b"data").expect("write");
        assert!(matches!(
            ApiServer::bind(&file),
            Err(ApiServerError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&file).expect("still there"), b"data");

        // A missing directory is a clear bind error.
        assert!(matches!(
            ApiServer::bind(&dir.join("missing/api.sock")),
            Err(ApiServerError::Lock(..))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn start_http_thread_serves() {
        let dir = temp_dir("thread");
        let path = dir.join("api.sock");
        let _thread = start_http_thread(&path, fake_vmm()).expect("start");
        let mut stream = ApiClient::new(UnixStream::connect(&path).expect("connect"));
        assert_eq!(
            stream
                .request("GET", "vmm.ping", None)
                .expect("ping")
                .status,
            200
        );
        // A VMM that is gone: requests get 500, the server survives.
        let dir2 = temp_dir("gone");
        let path2 = dir2.join("api.sock");
        let _thread2 = start_http_thread(&path2, Box::new(|_| false)).expect("start");
        let mut stream = ApiClient::new(UnixStream::connect(&path2).expect("connect"));
        let answer = stream.request("PUT", "vm.boot", None).expect("boot");
        assert_eq!(answer.status, 500);
        assert_eq!(body_json(&answer)[2], "The VMM is not running");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&dir2);
    }
}
