// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The `/api/v1/` endpoints: from a request to an [`ApiMessage`] for the
//! control loop, and from its answer to an HTTP response, with
//! upstream's status codes and error bodies.

use std::error::Error;
use std::sync::mpsc;

use super::response::Response;
use crate::api::{ApiMessage, ApiRequest, ApiResponse, ApiResponsePayload, VmNotCreated};
use crate::config::VmConfig;

/// The API's path prefix.
pub const HTTP_ROOT: &str = "/api/v1/";

/// Cloud Hypervisor endpoints this VMM does not implement yet: they are
/// answered 501 with a reason, not 404, so a client can tell "not yet"
/// from a typo.
pub const UNIMPLEMENTED_ENDPOINTS: &[&str] = &[
    "vm.add-device",
    "vm.add-disk",
    "vm.add-fs",
    "vm.add-generic-vhost-user",
    "vm.add-net",
    "vm.add-pmem",
    "vm.add-user-device",
    "vm.add-vdpa",
    "vm.add-vsock",
    "vm.balloon-stats",
    "vm.coredump",
    "vm.nmi",
    "vm.power-button",
    "vm.remove-device",
    "vm.resize",
    "vm.resize-disk",
    "vm.resize-zone",
];

/// How an endpoint is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `GET`, no body.
    Get,
    /// `PUT`, no body.
    Put,
    /// `PUT` with a `VmConfig` body.
    Create,
    /// `PUT` with a JSON body of the endpoint's own type.
    Body,
}

/// The endpoints this VMM implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    VmmPing,
    VmmShutdown,
    VmCreate,
    VmBoot,
    VmDelete,
    VmInfo,
    VmCounters,
    VmPause,
    VmResume,
    VmShutdown,
    VmReboot,
    VmSnapshot,
    VmRestore,
    VmSendMigration,
    VmReceiveMigration,
    VmFtAddBackup,
    VmFtReceiveBackup,
}

impl Endpoint {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "vmm.ping" => Endpoint::VmmPing,
            "vmm.shutdown" => Endpoint::VmmShutdown,
            "vm.create" => Endpoint::VmCreate,
            "vm.boot" => Endpoint::VmBoot,
            "vm.delete" => Endpoint::VmDelete,
            "vm.info" => Endpoint::VmInfo,
            "vm.counters" => Endpoint::VmCounters,
            "vm.pause" => Endpoint::VmPause,
            "vm.resume" => Endpoint::VmResume,
            "vm.shutdown" => Endpoint::VmShutdown,
            "vm.reboot" => Endpoint::VmReboot,
            "vm.snapshot" => Endpoint::VmSnapshot,
            "vm.restore" => Endpoint::VmRestore,
            "vm.send-migration" => Endpoint::VmSendMigration,
            "vm.receive-migration" => Endpoint::VmReceiveMigration,
            "vm.ft-add-backup" => Endpoint::VmFtAddBackup,
            "vm.ft-receive-backup" => Endpoint::VmFtReceiveBackup,
            _ => return None,
        })
    }

    fn shape(self) -> Shape {
        match self {
            Endpoint::VmmPing | Endpoint::VmInfo | Endpoint::VmCounters => Shape::Get,
            Endpoint::VmCreate => Shape::Create,
            Endpoint::VmSnapshot
            | Endpoint::VmRestore
            | Endpoint::VmSendMigration
            | Endpoint::VmReceiveMigration => Shape::Body,
            Endpoint::VmFtAddBackup | Endpoint::VmFtReceiveBackup => Shape::Body,
            _ => Shape::Put,
        }
    }

    /// Whether upstream serves this endpoint with its generic action
    /// handler (all but ping, info, create and vmm.shutdown).
    fn generic_handler(self) -> bool {
        !matches!(
            self,
            Endpoint::VmmPing | Endpoint::VmInfo | Endpoint::VmCreate | Endpoint::VmmShutdown
        )
    }

    /// Upstream's `ApiError` message for a failure of this action.
    fn context(self) -> &'static str {
        match self {
            Endpoint::VmmPing => "The VMM could not answer the ping",
            Endpoint::VmmShutdown => "The VMM could not shutdown",
            Endpoint::VmCreate => "The VM could not be created",
            Endpoint::VmBoot => "The VM could not boot",
            Endpoint::VmDelete => "The VM could not be deleted",
            Endpoint::VmInfo => "The VM info is not available",
            Endpoint::VmCounters => "The VM counters are not available",
            Endpoint::VmPause => "The VM could not be paused",
            Endpoint::VmResume => "The VM could not resume",
            Endpoint::VmShutdown => "The VM could not shutdown",
            Endpoint::VmReboot => "The VM could not reboot",
            Endpoint::VmSnapshot => "The VM could not be snapshotted",
            Endpoint::VmRestore => "The VM could not be restored",
            Endpoint::VmSendMigration => "The VM could not be migrated",
            Endpoint::VmReceiveMigration => "The VM migration could not be received",
            Endpoint::VmFtAddBackup => "The VM could not be protected by a new backup",
            Endpoint::VmFtReceiveBackup => "The backup could not be seeded",
        }
    }

    /// The request, for endpoints without a body.
    fn request(self) -> Option<ApiRequest> {
        Some(match self {
            Endpoint::VmmPing => ApiRequest::VmmPing,
            Endpoint::VmmShutdown => ApiRequest::VmmShutdown,
            Endpoint::VmCreate
            | Endpoint::VmSnapshot
            | Endpoint::VmRestore
            | Endpoint::VmSendMigration
            | Endpoint::VmReceiveMigration => return None,
            Endpoint::VmFtAddBackup | Endpoint::VmFtReceiveBackup => return None,
            Endpoint::VmBoot => ApiRequest::VmBoot,
            Endpoint::VmDelete => ApiRequest::VmDelete,
            Endpoint::VmInfo => ApiRequest::VmInfo,
            Endpoint::VmCounters => ApiRequest::VmCounters,
            Endpoint::VmPause => ApiRequest::VmPause,
            Endpoint::VmResume => ApiRequest::VmResume,
            Endpoint::VmShutdown => ApiRequest::VmShutdown,
            Endpoint::VmReboot => ApiRequest::VmReboot,
        })
    }
}

fn bad_request() -> Response {
    Response::error(400, ["Bad Request"])
}

/// The messages of `error` and of each of its sources, outermost first.
pub fn error_chain(error: &(dyn Error + 'static)) -> Vec<String> {
    std::iter::successors(Some(error), |e| (*e).source())
        .map(ToString::to_string)
        .collect()
}

fn api_error(status: u16, context: &str, causes: Vec<String>) -> Response {
    let messages = ["Error from API".to_string(), context.to_string()]
        .into_iter()
        .chain(causes);
    Response::error(status, messages)
}

/// Sends `request` to the control loop and turns its answer into HTTP.
fn call(endpoint: Endpoint, request: ApiRequest, submit: &dyn Fn(ApiMessage) -> bool) -> Response {
    let context = endpoint.context();
    let (response_tx, response_rx) = mpsc::channel::<ApiResponse>();
    if !submit(ApiMessage {
        request,
        response_tx,
    }) {
        return api_error(500, context, vec!["The VMM is not running".to_string()]);
    }
    match response_rx.recv() {
        Err(_) => api_error(
            500,
            context,
            vec!["The VMM dropped the request without answering".to_string()],
        ),
        Ok(Ok(ApiResponsePayload::Json(value))) => Response::json(&value),
        Ok(Ok(ApiResponsePayload::JsonText(text))) => Response::json_text(text),
        // vmm.shutdown answers 200 with no body, as upstream.
        Ok(Ok(ApiResponsePayload::Empty)) if endpoint == Endpoint::VmmShutdown => {
            Response::empty(200)
        }
        Ok(Ok(ApiResponsePayload::Empty)) => Response::empty(204),
        Ok(Err(error)) => {
            let error: &(dyn Error + 'static) = error.as_ref();
            // Also when boxed twice (`Box::new(VmNotCreated).into()`).
            let not_created = std::iter::successors(Some(error), |e| (*e).source())
                .any(|e| e.is::<VmNotCreated>() || e.is::<Box<VmNotCreated>>());
            api_error(
                if not_created { 404 } else { 500 },
                context,
                error_chain(error),
            )
        }
    }
}

/// Answers one request.
pub fn handle(
    method: &str,
    path: &str,
    body: &[u8],
    submit: &dyn Fn(ApiMessage) -> bool,
) -> Response {
    let Some(name) = path.strip_prefix(HTTP_ROOT) else {
        return Response::error(404, ["Not Found"]);
    };
    if UNIMPLEMENTED_ENDPOINTS.contains(&name) {
        return Response::error(
            501,
            [
                "Not Implemented".to_string(),
                format!("{name} is not supported yet"),
            ],
        );
    }
    let Some(endpoint) = Endpoint::from_name(name) else {
        return Response::error(404, ["Not Found"]);
    };
    match (endpoint.shape(), method) {
        (Shape::Get, "GET") => match endpoint.request() {
            Some(request) => call(endpoint, request, submit),
            None => bad_request(),
        },
        // As upstream: a body where none belongs is a bad request.
        (Shape::Put, "PUT") if body.is_empty() => match endpoint.request() {
            Some(request) => call(endpoint, request, submit),
            None => bad_request(),
        },
        // As upstream: vm.create without a body is 400 with no body.
        (Shape::Create, "PUT") if body.is_empty() => Response::empty(400),
        (Shape::Create, "PUT") => create(body, submit),
        (Shape::Body, "PUT") => with_body(endpoint, body, submit),
        // As upstream: its generic action handler answers a method other
        // than GET and PUT with a bare 400; the endpoints with handlers of
        // their own (ping, info, create, vmm.shutdown) with a body.
        (_, method) if method != "GET" && method != "PUT" && endpoint.generic_handler() => {
            Response::empty(400)
        }
        _ => bad_request(),
    }
}

/// `vm.snapshot` and `vm.restore`: their JSON body, as upstream's
/// `VmSnapshotConfig` and `RestoreConfig`.
fn with_body(endpoint: Endpoint, body: &[u8], submit: &dyn Fn(ApiMessage) -> bool) -> Response {
    let request = match endpoint {
        Endpoint::VmSnapshot => serde_json::from_slice(body).map(ApiRequest::VmSnapshot),
        Endpoint::VmSendMigration => serde_json::from_slice(body).map(ApiRequest::VmSendMigration),
        Endpoint::VmReceiveMigration => {
            serde_json::from_slice(body).map(ApiRequest::VmReceiveMigration)
        }
        Endpoint::VmFtAddBackup => serde_json::from_slice(body).map(ApiRequest::VmFtAddBackup),
        Endpoint::VmFtReceiveBackup => {
            serde_json::from_slice(body).map(ApiRequest::VmFtReceiveBackup)
        }
        _ => serde_json::from_slice(body).map(ApiRequest::VmRestore),
    };
    match request {
        Ok(request) => call(endpoint, request, submit),
        Err(e) => Response::error(
            400,
            ["Failed to deserialize JSON".to_string(), e.to_string()],
        ),
    }
}

fn create(body: &[u8], submit: &dyn Fn(ApiMessage) -> bool) -> Response {
    let config: VmConfig = match serde_json::from_slice(body) {
        Ok(config) => config,
        Err(e) => {
            return Response::error(
                400,
                ["Failed to deserialize JSON".to_string(), e.to_string()],
            )
        }
    };
    // Refuse here what this VMM cannot run, with upstream's chain for an
    // invalid configuration; the control loop only sees valid ones.
    if let Err(e) = config.validate() {
        let mut causes = vec!["Failed to validate config".to_string()];
        causes.extend(error_chain(&e));
        return api_error(500, Endpoint::VmCreate.context(), causes);
    }
    call(
        Endpoint::VmCreate,
        ApiRequest::VmCreate(Box::new(config)),
        submit,
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn body(response: &Response) -> serde_json::Value {
        serde_json::from_slice(&response.body).expect("JSON body")
    }

    /// A control loop double answering every request with `answer`, and
    /// recording what it was asked.
    fn answering(
        answer: impl Fn(&ApiRequest) -> Option<ApiResponse>,
    ) -> (
        impl Fn(ApiMessage) -> bool,
        std::rc::Rc<RefCell<Vec<String>>>,
    ) {
        let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        let submit = move |message: ApiMessage| {
            log.borrow_mut().push(format!("{:?}", message.request));
            if let Some(response) = answer(&message.request) {
                let _ = message.response_tx.send(response);
            }
            true
        };
        (submit, seen)
    }

    #[derive(Debug, thiserror::Error)]
    #[error("VM is already created")]
    struct AlreadyCreated;

    #[derive(Debug, thiserror::Error)]
    #[error("Outer failure")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn unknown_and_unimplemented_paths() {
        let (submit, seen) = answering(|_| None);
        for path in ["/api/v1/vm.bogus", "/api/v2/vm.info", "/", "/api/v1/"] {
            let response = handle("GET", path, b"", &submit);
            assert_eq!(response.status, 404, "{path}");
            assert_eq!(body(&response), serde_json::json!(["Not Found"]));
        }
        let response = handle("PUT", "/api/v1/vm.coredump", b"{}", &submit);
        assert_eq!(response.status, 501);
        assert_eq!(
            body(&response),
            serde_json::json!(["Not Implemented", "vm.coredump is not supported yet"])
        );
        assert!(seen.borrow().is_empty());
    }

    #[test]
    fn snapshot_and_restore_bodies() {
        let (submit, seen) = answering(|_| Some(Ok(ApiResponsePayload::Empty)));
        let response = handle(
            "PUT",
            "/api/v1/vm.snapshot",
            br#"{"destination_url":"file:///s"}"#,
            &submit,
        );
        assert_eq!(response.status, 204);
        let response = handle(
            "PUT",
            "/api/v1/vm.restore",
            br#"{"source_url":"file:///s","prefault":true}"#,
            &submit,
        );
        assert_eq!(response.status, 204);
        assert_eq!(
            *seen.borrow(),
            [
                r#"VmSnapshot(VmSnapshotConfig { destination_url: "file:///s" })"#,
                r#"VmRestore(RestoreConfig { source_url: "file:///s", prefault: true, resume: false })"#
            ]
        );
        // No body, a body that is not the endpoint's type, another method.
        assert_eq!(
            handle("PUT", "/api/v1/vm.snapshot", b"", &submit).status,
            400
        );
        let response = handle("PUT", "/api/v1/vm.restore", b"{}", &submit);
        assert_eq!(response.status, 400);
        assert_eq!(body(&response)[0], "Failed to deserialize JSON");
        assert_eq!(
            handle("GET", "/api/v1/vm.snapshot", b"", &submit).status,
            400
        );
        assert_eq!(seen.borrow().len(), 2);
    }

    #[test]
    fn wrong_method_or_stray_body() {
        let (submit, seen) = answering(|_| Some(Ok(ApiResponsePayload::Empty)));
        for (method, path, request_body) in [
            ("PUT", "/api/v1/vmm.ping", &b""[..]),
            ("GET", "/api/v1/vm.boot", b""),
            ("POST", "/api/v1/vm.info", b""),
            ("GET", "/api/v1/vm.create", b""),
            ("PATCH", "/api/v1/vm.create", b"{}"),
            ("PUT", "/api/v1/vm.boot", b"{}"),
            ("PUT", "/api/v1/vm.counters", b""),
            ("DELETE", "/api/v1/vmm.shutdown", b""),
        ] {
            let response = handle(method, path, request_body, &submit);
            assert_eq!(response.status, 400, "{method} {path}");
            assert_eq!(body(&response), serde_json::json!(["Bad Request"]));
        }
        // Upstream's generic action handler: a bare 400 for other methods.
        for (method, path) in [
            ("PATCH", "/api/v1/vm.boot"),
            ("POST", "/api/v1/vm.pause"),
            ("DELETE", "/api/v1/vm.counters"),
        ] {
            let response = handle(method, path, b"", &submit);
            assert_eq!(response, Response::empty(400), "{method} {path}");
        }
        assert!(seen.borrow().is_empty());
        let response = handle("PUT", "/api/v1/vm.create", b"", &submit);
        assert_eq!(response, Response::empty(400));
    }

    #[test]
    fn successes() {
        let (submit, seen) = answering(|request| {
            Some(Ok(match request {
                ApiRequest::VmmPing | ApiRequest::VmInfo => {
                    ApiResponsePayload::Json(serde_json::json!({"ok": true}))
                }
                _ => ApiResponsePayload::Empty,
            }))
        });
        let response = handle("GET", "/api/v1/vmm.ping", b"", &submit);
        assert_eq!(
            (response.status, body(&response)),
            (200, serde_json::json!({"ok": true}))
        );
        assert_eq!(handle("PUT", "/api/v1/vm.pause", b"", &submit).status, 204);
        assert_eq!(
            handle("PUT", "/api/v1/vmm.shutdown", b"", &submit),
            Response::empty(200)
        );
        let config =
            r#"{"payload":{"kernel":"/k"},"memory":{"size":134217728},"console":{"mode":"Off"}}"#;
        let response = handle("PUT", "/api/v1/vm.create", config.as_bytes(), &submit);
        assert_eq!(response, Response::empty(204));
        let seen = seen.borrow();
        assert_eq!(seen[0], "VmmPing");
        assert_eq!(seen[1], "VmPause");
        assert_eq!(seen[2], "VmmShutdown");
        assert!(seen[3].starts_with("VmCreate("), "{}", seen[3]);
        assert!(seen[3].contains("134217728"));
    }

    #[test]
    fn bad_configs() {
        let (submit, seen) = answering(|_| Some(Ok(ApiResponsePayload::Empty)));
        let response = handle("PUT", "/api/v1/vm.create", b"{bogus", &submit);
        assert_eq!(response.status, 400);
        assert_eq!(
            body(&response),
            serde_json::json!([
                "Failed to deserialize JSON",
                "key must be a string at line 1 column 2"
            ])
        );
        let response = handle(
            "PUT",
            "/api/v1/vm.create",
            br#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":2,"max_vcpus":2}}"#,
            &submit,
        );
        assert_eq!(response.status, 500);
        let messages = body(&response);
        assert_eq!(messages[0], "Error from API");
        assert_eq!(messages[1], "The VM could not be created");
        assert_eq!(messages[2], "Failed to validate config");
        assert!(messages[3]
            .as_str()
            .unwrap_or_default()
            .contains("only 1 vCPU"));
        assert!(
            seen.borrow().is_empty(),
            "invalid configs never reach the VMM"
        );
    }

    #[test]
    fn control_loop_errors() {
        let (submit, _) = answering(|request| match request {
            ApiRequest::VmBoot => Some(Err(Box::new(AlreadyCreated))),
            ApiRequest::VmInfo => Some(Err(Box::new(VmNotCreated))),
            ApiRequest::VmPause => Some(Err(Box::new(Outer(std::io::Error::other("inner"))))),
            _ => None,
        });
        let response = handle("PUT", "/api/v1/vm.boot", b"", &submit);
        assert_eq!(response.status, 500);
        assert_eq!(
            body(&response),
            serde_json::json!([
                "Error from API",
                "The VM could not boot",
                "VM is already created"
            ])
        );
        let response = handle("GET", "/api/v1/vm.info", b"", &submit);
        assert_eq!(response.status, 404);
        assert_eq!(
            body(&response),
            serde_json::json!([
                "Error from API",
                "The VM info is not available",
                "VM is not created"
            ])
        );
        let response = handle("PUT", "/api/v1/vm.pause", b"", &submit);
        assert_eq!(
            body(&response),
            serde_json::json!([
                "Error from API",
                "The VM could not be paused",
                "Outer failure",
                "inner"
            ])
        );
        // The control loop dropped the channel without answering.
        let response = handle("PUT", "/api/v1/vm.resume", b"", &submit);
        assert_eq!(response.status, 500);
        assert_eq!(
            body(&response)[2],
            "The VMM dropped the request without answering"
        );
        // The control loop is gone.
        let gone = |_: ApiMessage| false;
        let response = handle("GET", "/api/v1/vm.counters", b"", &gone);
        assert_eq!(response.status, 500);
        assert_eq!(body(&response)[2], "The VMM is not running");
    }
}
