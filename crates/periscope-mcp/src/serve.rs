//! Serving the tools: the MCP server's description, stdio, and streamable HTTP for `/mcp`.

use crate::{Backend, Periscope};
use periscope_client::Client;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::{prompt_handler, tool_handler, ServerHandler};
use std::sync::Arc;

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for Periscope {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .build(),
        )
        .with_instructions(
            "Periscope shows what live processes are doing, without restarting them. To investigate: \
             list_instances; find_message (from an error text) or find_functions to locate the code; read_source to see its lines and which \
             are instrumentable; add_snapshot (or add_log/add_counter) at a line; wait_for_events; read \
             the variables; verify_fix to check a candidate fix on live traffic; remove_probe when done. Probes are read-only: they never change what the \
             program does, and they expire on their own.",
        )
    }
}

/// Serves the tools over stdio until the client disconnects.
pub async fn serve_stdio(client: Client) -> Result<(), std::io::Error> {
    use rmcp::ServiceExt;
    let server = Periscope::new(Backend::Fixed(client))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    server
        .waiting()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(())
}

/// The streamable HTTP service for `/mcp`: tools call the API at `base` with each request's
/// bearer token. `any_host` lifts rmcp's loopback-only Host check (for a server listening on a
/// public address; bearer tokens still guard every call).
pub fn http_service(
    base: String,
    ca: Option<Vec<u8>>,
    any_host: bool,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    Periscope,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{
        session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
    };
    let mut config = StreamableHttpServerConfig::default();
    if any_host {
        config = config.disable_allowed_hosts();
    }
    StreamableHttpService::new(
        move || {
            Ok(Periscope::new(Backend::PerRequest {
                base: base.clone(),
                ca: ca.clone(),
            }))
        },
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
