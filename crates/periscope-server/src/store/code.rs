//! Code requests: a question about an instance's code, kept until the agent that reported the
//! instance answers it. In the store, not in memory, because the replica that took the HTTP
//! request need not be the one the agent polls; `peers` wakes the others.

use super::sql::{args, transaction};
use super::{Result, Store};

/// Requests older than this are gone (their HTTP caller stopped waiting long before).
const KEEP_MS: i64 = 5 * 60 * 1000;

/// Who answers for an instance.
pub struct CodeTarget {
    pub agent: String,
    /// The agent said it answers code requests (agents from before them do not).
    pub answers_code: bool,
}

impl Store {
    /// Records whether the agent answers code requests (on every report: an agent upgraded in
    /// place says so on its first).
    pub fn record_agent_features(&mut self, agent: &str, answers_code: bool) -> Result<()> {
        self.c().execute(
            "UPDATE instances SET answers_code = ?1 WHERE agent = ?2",
            args![answers_code, agent],
        )?;
        Ok(())
    }

    pub fn code_target(&mut self, instance: &str) -> Result<Option<CodeTarget>> {
        let rows = self.c().query(
            "SELECT agent, answers_code FROM instances WHERE id = ?1",
            args![instance],
        )?;
        rows.first()
            .map(|r| {
                Ok(CodeTarget {
                    agent: r.text(0)?,
                    answers_code: r.int(1)? != 0,
                })
            })
            .transpose()
    }

    /// Stores a request for `agent` (`body`: the request without its id) and returns its id.
    /// Requests long past their wait are deleted on the way.
    pub fn insert_code_request(&mut self, agent: &str, body: &str, now_ms: i64) -> Result<i64> {
        transaction(self.c(), |c| {
            c.execute(
                "DELETE FROM code_requests WHERE created_ms < ?1",
                args![now_ms - KEEP_MS],
            )?;
            let rows = c.query(
                "INSERT INTO code_requests (agent, body, created_ms) VALUES (?1, ?2, ?3)
                 RETURNING id",
                args![agent, body, now_ms],
            )?;
            rows.first()
                .ok_or_else(|| super::StoreError::Column("no code request number".into()))?
                .int(0)
        })
    }

    /// Hands out the agent's requests not handed out yet (each once, also when two replicas
    /// answer polls of the same agent at once): `(id, body)`.
    pub fn claim_code_requests(&mut self, agent: &str) -> Result<Vec<(i64, String)>> {
        transaction(self.c(), |c| {
            let rows = c.query(
                "SELECT id, body FROM code_requests WHERE agent = ?1 AND claimed = 0 ORDER BY id",
                args![agent],
            )?;
            let mut out = Vec::new();
            for r in rows {
                let id = r.int(0)?;
                let taken = c.execute(
                    "UPDATE code_requests SET claimed = 1 WHERE id = ?1 AND claimed = 0",
                    args![id],
                )?;
                if taken == 1 {
                    out.push((id, r.text(1)?));
                }
            }
            Ok(out)
        })
    }

    /// Stores the answer; false when there is no such request (answered already, or gone).
    pub fn answer_code_request(&mut self, id: i64, answer: &str) -> Result<bool> {
        let n = self.c().execute(
            "UPDATE code_requests SET answer = ?1 WHERE id = ?2 AND answer IS NULL",
            args![answer, id],
        )?;
        Ok(n == 1)
    }

    /// The answer once there is one: `Ok(None)` while pending.
    pub fn code_answer(&mut self, id: i64) -> Result<Option<String>> {
        let rows = self
            .c()
            .query("SELECT answer FROM code_requests WHERE id = ?1", args![id])?;
        Ok(rows.first().map(|r| r.opt_text(0)).transpose()?.flatten())
    }

    /// Whether the agent took the request (it is working on it).
    pub fn code_request_claimed(&mut self, id: i64) -> Result<bool> {
        let rows = self
            .c()
            .query("SELECT claimed FROM code_requests WHERE id = ?1", args![id])?;
        Ok(rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0) != 0)
    }

    pub fn delete_code_request(&mut self, id: i64) -> Result<()> {
        self.c()
            .execute("DELETE FROM code_requests WHERE id = ?1", args![id])?;
        Ok(())
    }
}
