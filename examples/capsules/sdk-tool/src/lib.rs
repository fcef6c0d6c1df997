//! A capsule written with the published guest SDK (`astrid-sdk` 0.7.2),
//! used unmodified: `#[capsule]` with one `#[astrid::tool]`. The SDK routes
//! the tool through the interceptor action `tool_execute_add`, publishes
//! the answer on `tool.v1.execute.add.result` (astrid:ipc) and keeps the
//! capsule's state in KV under `__state` (astrid:kv) because the tool takes
//! `&mut self`.

use astrid_sdk::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
pub struct Counter {
    total: i64,
    calls: u64,
}

#[derive(Deserialize, JsonSchema)]
pub struct AddArgs {
    amount: i64,
}

#[capsule]
impl Counter {
    /// Adds `amount` to the running total and answers the new total.
    #[astrid::tool("add")]
    fn add(&mut self, args: AddArgs) -> Result<serde_json::Value, SysError> {
        self.total += args.amount;
        self.calls += 1;
        Ok(serde_json::json!({ "total": self.total, "calls": self.calls }))
    }
}
