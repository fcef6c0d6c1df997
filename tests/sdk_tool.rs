//! A capsule written with astrid-sdk 0.7.2 (`#[capsule]` + `#[astrid::tool]`,
//! importing astrid:ipc, astrid:kv and astrid:sys) runs unmodified: the
//! embedder calls its `tool_execute_add` action directly or publishes on
//! `tool.v1.execute.add`, receives the answer the capsule publishes on
//! `tool.v1.execute.add.result`, and the tool's state persists in KV.

mod common;

use astrid::bus::Delivery;
use astrid::CallOptions;
use common::*;
use serde_json::{json, Value};
use std::sync::mpsc::channel;
use std::time::Duration;

#[test]
fn sdk_tool_answers_on_the_bus_and_keeps_state_in_kv() {
    let rt = runtime();
    let tool = load(&rt, "sdk-tool");
    assert!(!tool.runs_loop(), "the SDK's run placeholder is not a loop");
    let (tx, rx) = channel::<Value>();
    let results = {
        let tx = tx.clone();
        rt.subscribe(
            "tool.v1.*",
            Box::new(move |d: &Delivery| {
                let _ = tx.send(serde_json::from_str(&d.message.payload).unwrap());
            }),
        )
        .unwrap()
    };
    let next = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a tool message")
    };
    // Skips other traffic on `tool.v1.*` (the requests themselves).
    let result_for = |call_id: &str| loop {
        let m = next();
        if m["type"] == "tool_execute_result" && m["call_id"] == call_id {
            break m;
        }
    };

    // A direct call of the tool action.
    let request = json!({"call_id": "c1", "tool_name": "add", "arguments": {"amount": 5}});
    let direct = tool
        .call("tool_execute_add", request.to_string().as_bytes(), None)
        .unwrap();
    assert_eq!(direct.action, "continue");
    let answer = result_for("c1");
    assert_eq!(answer["result"]["is_error"], false);
    let content: Value =
        serde_json::from_str(answer["result"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"total": 5, "calls": 1}));

    // Through the bus: the [subscribe] handler makes it an interceptor. The
    // state (in KV under `__state`) carries over from the first call.
    let request = json!({"call_id": "c2", "tool_name": "add", "arguments": {"amount": 7}});
    rt.publish("tool.v1.execute.add", &request.to_string(), None)
        .unwrap();
    let answer = result_for("c2");
    let content: Value =
        serde_json::from_str(answer["result"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"total": 12, "calls": 2}));

    // Another principal has its own namespace, hence its own state.
    let options = CallOptions {
        principal: Some("frank".into()),
        ..CallOptions::default()
    };
    let request = json!({"call_id": "c3", "tool_name": "add", "arguments": {"amount": 1}});
    tool.call(
        "tool_execute_add",
        request.to_string().as_bytes(),
        Some(&options),
    )
    .unwrap();
    let answer = result_for("c3");
    let content: Value =
        serde_json::from_str(answer["result"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"total": 1, "calls": 1}));

    // Bad arguments: an error result, and the state is not saved.
    let request = json!({"call_id": "c4", "tool_name": "add", "arguments": {"amount": "x"}});
    tool.call("tool_execute_add", request.to_string().as_bytes(), None)
        .unwrap();
    let answer = result_for("c4");
    assert_eq!(answer["result"]["is_error"], true);

    // tool_describe publishes the descriptor with the doc comment.
    tool.call("tool_describe", b"{}", None).unwrap();
    let described = loop {
        let m = next();
        if m.to_string().contains("input_schema") {
            break m;
        }
    };
    let text = described.to_string();
    assert!(text.contains("\"add\""), "{text}");
    assert!(
        text.contains("Adds `amount` to the running total"),
        "{text}"
    );
    drop(results);
}
