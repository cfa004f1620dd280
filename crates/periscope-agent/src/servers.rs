//! The servers an agent reports to: any replica of one control plane. The agent sticks to one
//! and moves to the next when it fails, so all of its traffic follows one replica at a time.

use periscope_client::{Client, ClientError};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Servers {
    clients: Vec<Client>,
    current: AtomicUsize,
}

impl Servers {
    /// One client per URL (at least one).
    pub fn connect(
        urls: &[String],
        token: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<Servers, ClientError> {
        let clients = urls
            .iter()
            .map(|u| Client::with_ca(u, Some(token.to_string()), "agent", ca_pem))
            .collect::<Result<Vec<_>, _>>()?;
        if clients.is_empty() {
            return Err(ClientError::Decode {
                what: "--server".into(),
                reason: "no server URL given".into(),
            });
        }
        Ok(Servers {
            clients,
            current: AtomicUsize::new(0),
        })
    }

    /// The server in use, with its index (to say which one failed).
    pub fn current(&self) -> (usize, &Client) {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len();
        (i, &self.clients[i])
    }

    /// Server `which` failed: the next one is used from now on (unless another thread has
    /// moved on already). True when every server has been tried since the first, so the
    /// caller should back off before the next round.
    pub fn failed(&self, which: usize) -> bool {
        let n = self.clients.len();
        let next = (which + 1) % n;
        if n > 1
            && self
                .current
                .compare_exchange(which, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            eprintln!(
                "periscope agent: {} failed; moving to {}",
                self.clients[which].base(),
                self.clients[next].base()
            );
        }
        next == 0
    }
}

/// Whether another replica might do better: the server was unreachable or failed, as opposed
/// to refusing the request itself (which every replica would refuse alike).
pub fn worth_another(e: &ClientError) -> bool {
    !e.status().is_some_and(|s| (400..500).contains(&s))
}
