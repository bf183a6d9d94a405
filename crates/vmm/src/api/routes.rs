//! The route table: which method on which path means which [`Action`], and
//! how a request body becomes the action's argument. Pure functions of the
//! request, so every mapping is testable without a socket.

use serde::de::DeserializeOwned;

use super::types::{Action, ApiError};

/// The OpenAPI 3.0 document describing every route, served at `GET /openapi`.
pub const OPENAPI_DOCUMENT: &str = include_str!("openapi.json");

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Something only the VM can answer: handed to the `VmController`.
    Action(Action),
    /// The OpenAPI document: answered by the server itself.
    OpenApi,
}

/// Why a request maps to no target: the error to send, and for a wrong
/// method the methods the path does take (the `Allow` header of a 405).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Status and message for the `{"error": ...}` body.
    pub error: ApiError,
    /// For 405: the methods the path allows.
    pub allow: Option<&'static str>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self { error, allow: None }
    }
}

/// One route: a method on a path, and how to build its target from the body.
pub struct Route {
    /// `GET` or `PUT`.
    pub method: &'static str,
    /// The exact path.
    pub path: &'static str,
    build: fn(&[u8]) -> Result<Target, ApiError>,
}

type Build = fn(&[u8]) -> Result<Target, ApiError>;

const fn route(method: &'static str, path: &'static str, build: Build) -> Route {
    Route {
        method,
        path,
        build,
    }
}

/// The `Allow` of a path that takes both methods (`/vm/balloon`: read
/// with GET, change with PUT); every other path takes exactly one.
const GET_AND_PUT: &str = "GET, PUT";

/// Every route the API serves.
pub const ROUTES: &[Route] = &[
    route("GET", "/vm", |b| bodyless(b, Action::GetVm)),
    route("GET", "/vm/counters", |b| bodyless(b, Action::GetCounters)),
    route("GET", "/openapi", |b| no_body(b).map(|()| Target::OpenApi)),
    route("PUT", "/vm/config", |b| {
        with_json(b, "VmConfigSpec", |s| Action::Configure(Box::new(s)))
    }),
    route("PUT", "/vm/boot", |b| bodyless(b, Action::Boot)),
    route("PUT", "/vm/pause", |b| bodyless(b, Action::Pause)),
    route("PUT", "/vm/resume", |b| bodyless(b, Action::Resume)),
    route("PUT", "/vm/shutdown", |b| bodyless(b, Action::Shutdown)),
    route("PUT", "/vm/reset", |b| bodyless(b, Action::Reset)),
    route("PUT", "/vm/power-off", |b| bodyless(b, Action::PowerOff)),
    route("PUT", "/vm/add-disk", |b| {
        with_json(b, "DiskSpec", Action::AddDisk)
    }),
    route("PUT", "/vm/add-net", |b| {
        with_json(b, "NetSpec", Action::AddNet)
    }),
    route("PUT", "/vm/remove-device", |b| {
        with_json(b, "RemoveDeviceSpec", Action::RemoveDevice)
    }),
    route("PUT", "/vm/resize-disk", |b| {
        with_json(b, "ResizeDiskSpec", Action::ResizeDisk)
    }),
    route("GET", "/vm/balloon", |b| bodyless(b, Action::GetBalloon)),
    route("PUT", "/vm/balloon", |b| {
        with_json(b, "BalloonSpec", Action::SetBalloon)
    }),
    route("GET", "/vm/vcpus", |b| bodyless(b, Action::GetVcpus)),
    route("PUT", "/vm/vcpu-pin", |b| {
        with_json(b, "VcpuPinSpec", Action::PinVcpu)
    }),
    route("PUT", "/vm/emulator-pin", |b| {
        with_json(b, "EmulatorPinSpec", Action::PinEmulator)
    }),
    route("GET", "/vm/numa", |b| bodyless(b, Action::GetNuma)),
];

/// Map a request to its target. `target` is the request target as sent
/// (a query string, which no route uses, is ignored).
pub fn resolve(method: &str, target: &str, body: &[u8]) -> Result<Target, Refusal> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let mut allow = None;
    for route in ROUTES.iter().filter(|r| r.path == path) {
        if route.method == method {
            return (route.build)(body).map_err(Refusal::from);
        }
        allow = Some(match allow {
            None => route.method,
            Some(_) => GET_AND_PUT,
        });
    }
    match allow {
        Some(allow) => Err(Refusal {
            error: ApiError::new(405, format!("{path} takes {allow}, not {method}")),
            allow: Some(allow),
        }),
        None => Err(ApiError::new(404, format!("no such path: {path}")).into()),
    }
}

/// A route without a body: the action, if the body is empty.
fn bodyless(body: &[u8], action: Action) -> Result<Target, ApiError> {
    no_body(body).map(|()| Target::Action(action))
}

/// A route with a JSON body: `action` of the parsed body.
fn with_json<T: DeserializeOwned>(
    body: &[u8],
    what: &str,
    action: impl FnOnce(T) -> Action,
) -> Result<Target, ApiError> {
    json(body, what).map(|spec| Target::Action(action(spec)))
}

/// Accept an empty body, or `{}` (some clients always send an object);
/// refuse anything else, so a client that thinks it is passing options
/// learns it is not.
fn no_body(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(map) if map.is_empty() => Ok(()),
        _ => Err(ApiError::new(400, "this request takes no body")),
    }
}

/// Parse a JSON body into `T`; the serde error (with line and column) goes
/// back to the client.
fn json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            400,
            format!("this request needs a JSON {what} body"),
        ));
    }
    let invalid =
        |e: &dyn std::fmt::Display| ApiError::new(400, format!("invalid {what} body: {e}"));
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| invalid(&e))?;
    if !value.is_object() {
        return Err(invalid(&"the body must be a JSON object"));
    }
    // From the bytes rather than from `value`: serde's message then
    // carries the line and column.
    let parsed = serde_json::from_slice(body).map_err(|e| invalid(&e))?;
    // Only now: an array serde accepted where a struct belongs.
    objects_only(&value, "the body").map_err(|e| invalid(&e))?;
    Ok(parsed)
}

/// serde reads a struct from a JSON array as readily as from an object
/// (`[null, null]` would make a `NetSpec`): refuse that. Called on bodies
/// serde accepted, where an array can only be an array-typed field (each
/// holds objects or plain numbers: the OpenAPI document's test keeps it
/// so) or a struct given as an array, so the rule needs no schema: an
/// array inside an array is always a struct in disguise.
fn objects_only(value: &serde_json::Value, at: &str) -> Result<(), String> {
    use serde_json::Value;
    let Value::Object(map) = value else {
        return Err(format!("{at} must be a JSON object"));
    };
    for (key, field) in map {
        if let Value::Array(items) = field {
            for (i, item) in items.iter().enumerate() {
                if item.is_object() || item.is_array() {
                    objects_only(item, &format!("{key}[{i}]"))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{BalloonSpec, NetSpec, RemoveDeviceSpec, ResizeDiskSpec};

    fn action(method: &str, path: &str, body: &str) -> Action {
        match resolve(method, path, body.as_bytes()) {
            Ok(Target::Action(a)) => a,
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    fn refusal(method: &str, path: &str, body: &str) -> Refusal {
        resolve(method, path, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn bodyless_routes() {
        assert_eq!(action("GET", "/vm", ""), Action::GetVm);
        assert_eq!(action("GET", "/vm?verbose=1", ""), Action::GetVm);
        assert_eq!(action("GET", "/vm/counters", ""), Action::GetCounters);
        assert_eq!(action("PUT", "/vm/boot", ""), Action::Boot);
        assert_eq!(action("PUT", "/vm/pause", "{}"), Action::Pause);
        assert_eq!(action("PUT", "/vm/resume", " \r\n"), Action::Resume);
        assert_eq!(action("PUT", "/vm/shutdown", ""), Action::Shutdown);
        assert_eq!(action("PUT", "/vm/reset", ""), Action::Reset);
        assert_eq!(action("PUT", "/vm/power-off", ""), Action::PowerOff);
        assert_eq!(resolve("GET", "/openapi", b""), Ok(Target::OpenApi));
    }

    #[test]
    fn body_routes() {
        let a = action(
            "PUT",
            "/vm/add-disk",
            r#"{"path":"/a.img","readonly":true}"#,
        );
        let Action::AddDisk(d) = a else {
            panic!("{a:?}")
        };
        assert_eq!(d.path.to_str(), Some("/a.img"));
        assert!(d.readonly);
        assert_eq!(
            action("PUT", "/vm/remove-device", r#"{"id":"disk1"}"#),
            Action::RemoveDevice(RemoveDeviceSpec { id: "disk1".into() })
        );
        assert_eq!(
            action(
                "PUT",
                "/vm/resize-disk",
                r#"{"id":"d","size_bytes":1048576}"#
            ),
            Action::ResizeDisk(ResizeDiskSpec {
                id: "d".into(),
                size_bytes: 1 << 20,
                shrink: false,
            })
        );
        let a = action("PUT", "/vm/add-net", r#"{"tap":"tap0"}"#);
        assert!(matches!(a, Action::AddNet(NetSpec { tap: Some(t), .. }) if t == "tap0"));
        assert_eq!(action("GET", "/vm/vcpus", ""), Action::GetVcpus);
        assert_eq!(action("GET", "/vm/numa", ""), Action::GetNuma);
        assert_eq!(
            action("PUT", "/vm/vcpu-pin", r#"{"vcpu":1,"cpus":[0,1]}"#),
            Action::PinVcpu(crate::api::VcpuPinSpec {
                vcpu: 1,
                cpus: vec![0, 1]
            })
        );
        let a = action("PUT", "/vm/emulator-pin", r#"{"cpus":[1]}"#);
        assert!(matches!(a, Action::PinEmulator(s) if s.cpus == [1]));
        // A list of numbers holds no struct in disguise; a list in it does.
        let r = refusal("PUT", "/vm/emulator-pin", r#"{"cpus":[[0]]}"#);
        assert_eq!(r.error.status, 400);
        let r = refusal("PUT", "/vm/vcpu-pin", r#"{"vcpu":-1,"cpus":[0]}"#);
        assert_eq!(r.error.status, 400);
        let a = action("PUT", "/vm/config", r#"{"kernel":"/k","cpus":2}"#);
        assert!(matches!(a, Action::Configure(c) if c.cpus == Some(2)));
    }

    #[test]
    fn bad_bodies_are_400_with_the_serde_message() {
        let r = refusal("PUT", "/vm/add-disk", r#"{"path":"/a","bogus":1}"#);
        assert_eq!(r.error.status, 400);
        assert!(r.error.message.contains("unknown field `bogus`"), "{r:?}");
        assert!(r.error.message.contains("line 1 column"), "{r:?}");
        let r = refusal("PUT", "/vm/add-disk", "{");
        assert!(r.error.message.contains("EOF"), "{r:?}");
        let r = refusal("PUT", "/vm/add-disk", "");
        assert!(r.error.message.contains("needs a JSON DiskSpec"), "{r:?}");
        let r = refusal("PUT", "/vm/pause", r#"{"now":true}"#);
        assert_eq!(r.error.status, 400);
        assert!(r.error.message.contains("no body"));
        let r = refusal("PUT", "/vm/resize-disk", r#"{"id":"d","size_bytes":-1}"#);
        assert_eq!(r.error.status, 400);
    }

    #[test]
    fn arrays_are_not_objects() {
        // serde alone would make a card of `[null,null]`.
        let r = refusal("PUT", "/vm/add-net", "[null,null]");
        assert_eq!(r.error.status, 400);
        assert!(r.error.message.contains("must be a JSON object"), "{r:?}");
        let r = refusal("PUT", "/vm/resize-disk", r#"["d",512]"#);
        assert_eq!(r.error.status, 400);
        // A card as an array serde would take field by field.
        let r = refusal(
            "PUT",
            "/vm/config",
            r#"{"kernel":"/k","nets":[{}, [null,null,null,null]]}"#,
        );
        assert!(
            r.error.message.contains("nets[1] must be a JSON object"),
            "{r:?}"
        );
        let r = refusal(
            "PUT",
            "/vm/config",
            r#"{"kernel":"/k","disks":[["/d.img"]]}"#,
        );
        assert_eq!(r.error.status, 400);
        let r = refusal("PUT", "/vm/config", r#"{"kernel":"/k","nets":[null]}"#);
        assert_eq!(r.error.status, 400);
        let r = refusal("PUT", "/vm/config", r#"["/k"]"#);
        assert_eq!(r.error.status, 400);
        // An array where a string belongs is serde's to name.
        let r = refusal("PUT", "/vm/add-disk", r#"{"path":"/d","serial":["x"]}"#);
        assert!(r.error.message.contains("invalid type: sequence"), "{r:?}");
    }

    #[test]
    fn unknown_paths_and_wrong_methods() {
        let r = refusal("GET", "/vm/nope", "");
        assert_eq!((r.error.status, r.allow), (404, None));
        assert_eq!(refusal("GET", "/vm/", "").error.status, 404);
        let r = refusal("PUT", "/vm", "");
        assert_eq!((r.error.status, r.allow), (405, Some("GET")));
        let r = refusal("GET", "/vm/pause", "");
        assert_eq!((r.error.status, r.allow), (405, Some("PUT")));
        let r = refusal("DELETE", "/vm/counters", "");
        assert_eq!(r.allow, Some("GET"));
        let r = refusal("DELETE", "/vm/balloon", "");
        assert_eq!((r.error.status, r.allow), (405, Some(GET_AND_PUT)));
        // Only GET and PUT ever share a path.
        for path in ROUTES.iter().map(|r| r.path) {
            let methods: Vec<_> = ROUTES
                .iter()
                .filter(|r| r.path == path)
                .map(|r| r.method)
                .collect();
            assert!(methods.len() == 1 || methods == ["GET", "PUT"], "{path}");
        }
    }

    #[test]
    fn balloon_routes() {
        assert_eq!(action("GET", "/vm/balloon", ""), Action::GetBalloon);
        assert_eq!(
            action("PUT", "/vm/balloon", r#"{"target_kib":524288}"#),
            Action::SetBalloon(BalloonSpec {
                target_kib: Some(512 << 10),
                stats_period: None
            })
        );
        assert_eq!(
            action("PUT", "/vm/balloon", r#"{"stats_period":5}"#),
            Action::SetBalloon(BalloonSpec {
                target_kib: None,
                stats_period: Some(5)
            })
        );
        for bad in [
            r#"{"target_kib":-1}"#,
            r#"{"target":1}"#,
            r#"{"stats_period":4294967296}"#,
            r#"{"stats_period":null,"target_kib":4096}"#,
            "",
        ] {
            assert_eq!(
                refusal("PUT", "/vm/balloon", bad).error.status,
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn openapi_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_DOCUMENT).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
            assert!(
                op.is_object(),
                "{} {} missing from openapi.json",
                r.method,
                r.path
            );
        }
        let paths = doc["paths"].as_object().unwrap();
        let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(
            operations,
            ROUTES.len(),
            "openapi.json has extra operations"
        );
        // `objects_only` relies on it: every array a request body holds
        // is an array of objects.
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            let Some(props) = schema["properties"].as_object() else {
                continue;
            };
            for (field, prop) in props {
                if prop["type"] == "array" && name.ends_with("Spec") {
                    if prop["items"]["type"] == "integer" {
                        continue;
                    }
                    let items = prop["items"]["$ref"].as_str().unwrap_or("");
                    let target = items.rsplit('/').next().unwrap_or("");
                    assert_eq!(
                        doc["components"]["schemas"][target]["type"], "object",
                        "{name}.{field} must be an array of objects"
                    );
                }
            }
        }
    }
}
