//! Every error answer is the protocol's JSON envelope, whoever produced it, and the OpenAPI
//! document says what the server accepts. On both backends.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value as Json;
use tests::on_both_backends;
use tests::server::TestServer;

async fn unknown_paths_are_404_and_wrong_methods_405_in_json(s: TestServer) {
    for (method, path) in [
        (Method::GET, "/api/nowhere"),
        (Method::POST, "/"),
        (Method::GET, "/api/sync"),
        (Method::GET, "/api/sync/pull/extra"),
    ] {
        let (st, b) = s.call(method.clone(), path, None, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {b}");
        assert_eq!(b["error"], "not_found", "{method} {path}");
        assert!(b["message"].is_string());
    }
    for (method, path, allowed) in [
        (Method::GET, "/api/sync/push", "POST"),
        (Method::DELETE, "/api/health", "GET"),
        (Method::PUT, "/api/auth/login", "POST"),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let (st, headers, b) = s.send_with_headers(req).await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {b}");
        assert_eq!(b["error"], "method_not_allowed");
        assert_eq!(
            headers.get("content-type").unwrap(),
            "application/json",
            "{method} {path}"
        );
        assert!(
            headers
                .get("allow")
                .is_some_and(|a| a.to_str().unwrap().contains(allowed)),
            "{method} {path}: {headers:?}"
        );
    }
}
on_both_backends!(
    unknown_routes,
    unknown_paths_are_404_and_wrong_methods_405_in_json
);

/// Every `minimum` under `node`, with the path to it.
fn minimums(node: &Json, at: String, out: &mut Vec<(String, Json)>) {
    match node {
        Json::Object(m) => {
            for (k, v) in m {
                if k == "minimum" {
                    out.push((at.clone(), v.clone()));
                }
                minimums(v, format!("{at}/{k}"), out);
            }
        }
        Json::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                minimums(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

async fn the_openapi_document_declares_bearer_auth_and_the_accepted_ranges(s: TestServer) {
    let (st, doc) = s.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(
        scheme["scheme"].as_str().map(str::to_lowercase).as_deref(),
        Some("bearer")
    );
    for (method, path) in [
        ("post", "/api/sync/push"),
        ("get", "/api/sync/pull"),
        ("post", "/api/auth/logout"),
    ] {
        assert!(
            doc["paths"][path][method]["security"][0]["bearer"].is_array(),
            "{method} {path} requires the bearer token"
        );
    }
    for (method, path) in [("get", "/api/health"), ("post", "/api/auth/login")] {
        assert!(
            doc["paths"][path][method]["security"].is_null(),
            "{path} is open"
        );
    }
    // Where the server refuses 0 (`limit`, schema versions), the document does not offer it.
    let params = doc["paths"]["/api/sync/pull"]["get"]["parameters"]
        .as_array()
        .unwrap();
    for name in ["limit", "X-Sync-Schema-Version"] {
        let p = params.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(p["schema"]["minimum"], 1, "{name}: {p}");
    }
    assert_eq!(
        doc["components"]["schemas"]["PushRequest"]["properties"]["schema_version"]["minimum"],
        1
    );
    // The server takes any `wait` a u64 holds and caps it: the document offers no less (an
    // `int64` format would have told clients that 2^63 is refused; schemathesis found it).
    let wait = params.iter().find(|p| p["name"] == "wait").unwrap();
    assert_eq!(
        wait["schema"]["maximum"],
        serde_json::json!(u64::MAX),
        "{wait}"
    );
    assert!(wait["schema"]["format"].is_null(), "{wait}");
    let mut found = Vec::new();
    minimums(&doc["paths"], String::new(), &mut found);
    minimums(
        &doc["components"]["schemas"]["PushRequest"],
        String::new(),
        &mut found,
    );
    // `wait=0` is accepted (a pull not held), and answers' headers are no request fields.
    let accepts_zero: Vec<String> = params
        .iter()
        .enumerate()
        .filter(|(_, p)| p["name"] == "wait")
        .map(|(i, _)| format!("/parameters/{i}/"))
        .collect();
    assert!(
        found.iter().all(|(path, v)| *v != 0
            || path.contains("/responses/")
            || accepts_zero.iter().any(|z| path.contains(z.as_str()))),
        "a minimum of 0 on a request field: {found:?}"
    );
}
on_both_backends!(
    openapi_contract,
    the_openapi_document_declares_bearer_auth_and_the_accepted_ranges
);
