//! The engine's view of the user's records on disk: the call history (the ini's
//! `[Calls]`, read under the lock every ini writer shares) and `Contacts.xml`.

use std::sync::{Arc, Mutex};

use microsip_config::IniFile;
use microsip_engine::Records;
use serde_json::{json, Value};

use crate::contacts::{AddOutcome, ContactsFile};
use crate::history::{self, CallType};

/// History and contacts beside the ini.
pub struct RecordFiles {
    /// The ini file, whose `[Calls]` section holds the call history.
    pub ini: Arc<Mutex<IniFile>>,
    /// The address book (`Contacts.xml`).
    pub contacts: ContactsFile,
}

impl Records for RecordFiles {
    fn history(&self) -> Result<Vec<Value>, String> {
        let mut file = self
            .ini
            .lock()
            .map_err(|_| "the ini lock is poisoned".to_string())?;
        file.reload().map_err(|e| e.to_string())?;
        Ok(history::read(file.doc())
            .into_iter()
            .map(|e| {
                let kind = match e.kind {
                    CallType::Outgoing => "out",
                    CallType::Incoming => "in",
                    CallType::Missed => "missed",
                    CallType::AnsweredElsewhere => "elsewhere",
                    CallType::Other(_) => "other",
                };
                json!({
                    "number": e.number, "name": e.name, "type": kind,
                    "time": e.time, "duration": e.duration, "info": e.info,
                })
            })
            .collect())
    }

    fn contacts(&self) -> Result<Vec<Value>, String> {
        let list = self.contacts.list().map_err(|e| e.to_string())?;
        Ok(list
            .iter()
            .map(|c| json!({ "name": c.name(), "number": c.number(), "presence": c.presence() }))
            .collect())
    }

    fn add_contact(&mut self, name: &str, number: &str, presence: bool) -> Result<String, String> {
        match self.contacts.add(name, number, presence) {
            Ok(AddOutcome::Added) => Ok("added".into()),
            Ok(AddOutcome::Updated) => Ok("updated".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn remove_contact(&mut self, number: &str) -> Result<bool, String> {
        self.contacts.remove(number).map_err(|e| e.to_string())
    }
}
