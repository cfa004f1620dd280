//! The `investigate` prompt: the steps from a symptom to evidence and a verified fix.

use crate::Periscope;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::PromptMessage;
use rmcp::{prompt, prompt_router};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
pub struct InvestigateArgs {
    /// What goes wrong, in the user's words (an error message, a wrong total, a slow request).
    pub symptom: String,
    /// Which instances: tags such as `service=ledger` or an instance id (optional).
    pub target: Option<String>,
}

#[prompt_router(vis = "pub(crate)")]
impl Periscope {
    #[prompt(
        name = "investigate",
        description = "Walk through investigating a live problem with evidence from the running process: find the code, read it, place a snapshot, wait, explain."
    )]
    async fn investigate(&self, Parameters(a): Parameters<InvestigateArgs>) -> Vec<PromptMessage> {
        let target = a
            .target
            .map(|t| format!(" on `{t}`"))
            .unwrap_or_else(|| " (call list_instances to pick the target)".into());
        vec![PromptMessage::new_text(
            rmcp::model::Role::User,
            format!(
                "Investigate this problem in the running service{target}: {}\n\n\
                 1. list_instances to see what runs, with its tags and language.\n\
                 2. If the symptom includes a message (a log line, an error text), find_message \
                 with it: it names the function and line that produce it. Otherwise find_functions \
                 with words from the symptom to locate the code.\n\
                 3. read_source around the function; note the lines marked instrumentable.\n\
                 4. add_snapshot at the line where the wrong value should be visible (add a \
                 condition to catch only the bad case), or watch_failures for crashes.\n\
                 5. wait_for_events, then read the variables in the event's frames.\n\
                 6. Explain the cause from the captured values, citing them; remove_probe when \
                 done. Probes never change what the program does.\n\
                 7. To check a fix before it ships: verify_fix at the same line, with the failure \
                 as a condition and one or more candidates written as assignments (what the fixed \
                 code would compute); report each candidate's verdict: failing hits fixed, and \
                 passing hits unchanged, changed or broken. When the failure only shows later than \
                 the line the fix changes (its effect must run through the code), use replay: \
                 \"FROM..UNTIL\" (FROM where the computation starts, UNTIL a later line of the \
                 same thread, where the failure condition is read).",
                a.symptom
            ),
        )]
    }
}
