//! A call's stream as the edge writes it: the call folded so far, and each command decided
//! on it and appended (durably) before anyone hears of the step.

use domain::call::{Call, CallCommand};
use domain::ids::CallId;
use infra::command::{self, CommandError, Loaded, Origin};

use super::host::CallHost;

pub struct CallStream {
    pub id: CallId,
    stream: String,
    state: Option<Loaded<Call>>,
}

impl CallStream {
    pub fn new(id: CallId) -> Self {
        Self {
            stream: id.stream_id(),
            id,
            state: None,
        }
    }

    /// Decides `command` on the call and appends what it decided, as the edge's actor.
    pub async fn record(
        &mut self,
        host: &dyn CallHost,
        command: CallCommand,
    ) -> Result<(), CommandError> {
        let origin = Origin {
            actor: host.actor(),
            correlation_id: Some(self.id.0),
            observe_append: None,
        };
        let loaded = self.state.take();
        match command::execute::<Call>(host.store(), &origin, &self.stream, &command, loaded, None)
            .await
        {
            Ok((loaded, events)) => {
                self.state = Some(loaded);
                if let (false, CallCommand::End { cause, .. }) = (events.is_empty(), &command) {
                    host.count_end(*cause);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(call = %self.id, error = %e, "call event not recorded");
                Err(e)
            }
        }
    }
}
