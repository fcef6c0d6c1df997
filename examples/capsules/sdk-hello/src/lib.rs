//! A capsule written with the published guest SDK (`astrid-sdk` 0.7.2), used
//! unmodified to show that astrid serves the published host ABI. It uses
//! `astrid:sys` through the SDK's `log`, `env` and `time` modules.

use astrid_sdk::prelude::*;
use serde::Deserialize;

#[derive(Default)]
pub struct SdkHello;

#[derive(Deserialize)]
pub struct GreetArgs {
    name: String,
}

#[capsule]
impl SdkHello {
    #[astrid::interceptor("greet")]
    fn greet(&self, args: GreetArgs) -> Result<serde_json::Value, SysError> {
        let greeting = env::var("GREETING")?;
        let now = time::now()?;
        let millis = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        log::info(format!("sdk capsule greeting {}", args.name));
        Ok(serde_json::json!({
            "message": format!("{greeting}, {}!", args.name),
            "clock_ms": millis,
        }))
    }
}
