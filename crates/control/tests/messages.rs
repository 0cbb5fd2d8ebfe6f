//! The message store: one JSON-lines file per contact, synced before `store`
//! returns; torn and broken lines skipped; SIGKILL loses nothing stored.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use microsip_test_support::{mkfifo, TempDir};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use microsip_control::messages::{self, MessageDirection, MessageStore, StoredMessage};

fn incoming(text: &str, time: i64) -> StoredMessage {
    StoredMessage {
        time,
        direction: MessageDirection::In,
        from: "sip:bob@example.com".into(),
        to: "sip:1001@example.com".into(),
        text: text.into(),
        status: "received".into(),
        id: String::new(),
    }
}

#[test]
fn store_list_and_contacts() {
    let dir = TempDir::new("messages-basic");
    let store = MessageStore::beside_ini(&dir.join("microsip.ini"));
    assert_eq!(store.dir(), dir.join("messages"));
    assert!(store.contacts().unwrap().is_empty());
    assert!(store.list("sip:bob@example.com").unwrap().is_empty());

    let first = incoming("hello", 1);
    let reply = StoredMessage {
        direction: MessageDirection::Out,
        from: "sip:1001@example.com".into(),
        to: "sip:bob@example.com".into(),
        status: "pending".into(),
        id: "m1".into(),
        ..incoming("hi \"Bob\"\nhow are you?", 2)
    };
    store
        .store("\"Bob\" <sip:bob@EXAMPLE.com;transport=tcp>", &first)
        .unwrap();
    store.store("sip:bob@example.com", &reply).unwrap();
    store
        .store("sip:carol@example.com", &incoming("other", 3))
        .unwrap();

    // A restart: a new store on the same folder.
    let store = MessageStore::beside_ini(&dir.join("microsip.ini"));
    assert_eq!(
        store.list("sip:bob@example.com").unwrap(),
        [first.clone(), reply.clone()]
    );
    assert_eq!(store.list("sip:carol@example.com").unwrap().len(), 1);
    let mut contacts = store.contacts().unwrap();
    contacts.sort();
    assert_eq!(contacts, ["sip:bob@example.com", "sip:carol@example.com"]);

    // A later status applies to the message with that id.
    store
        .set_status("sip:bob@example.com", "m1", "sent")
        .unwrap();
    let listed = store.list("sip:bob@example.com").unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].status, "sent");
    assert_eq!(listed[0].status, "received");

    // Private folder and files, one JSON object per line.
    let mode = fs::metadata(store.dir()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let path = store.path_for("sip:bob@example.com");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["contact"], "sip:bob@example.com");
    }
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["direction"], "in");
    assert_eq!(v["text"], "hello");
    assert_eq!(v["time"], 1);
}

#[test]
fn look_alike_uris_stay_apart() {
    let dir = TempDir::new("messages-apart");
    let store = MessageStore::new(&dir);
    store.store("sip:a/b@x", &incoming("slash", 1)).unwrap();
    store
        .store("sip:a_b@x", &incoming("underscore", 2))
        .unwrap();
    store
        .store("../../etc/passwd", &incoming("escape", 3))
        .unwrap();
    assert_eq!(store.list("sip:a/b@x").unwrap()[0].text, "slash");
    assert_eq!(store.list("sip:a_b@x").unwrap()[0].text, "underscore");
    assert_eq!(store.list("../../etc/passwd").unwrap()[0].text, "escape");
    assert_ne!(store.path_for("sip:a/b@x"), store.path_for("sip:a_b@x"));
    for entry in fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._-".contains(c)));
        assert!(!name.starts_with('.'));
    }
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
}

#[test]
fn torn_and_broken_lines_are_skipped() {
    let dir = TempDir::new("messages-torn");
    let store = MessageStore::new(&dir);
    let contact = "sip:bob@example.com";
    store.store(contact, &incoming("one", 1)).unwrap();
    let path = store.path_for(contact);
    {
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"not json\n[1,2]\n{\"contact\":\"sip:bob@example.com\"}\n\xff\xfe\n\n")
            .unwrap();
        f.write_all(b"{\"contact\":\"sip:bob@example.com\",\"time\":2,\"direction\":\"in\",\"te")
            .unwrap();
    }
    let listed = store.list(contact).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].text, "one");
    // The next message starts on its own line.
    store.store(contact, &incoming("two", 3)).unwrap();
    let texts: Vec<String> = store
        .list(contact)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["one", "two"]);
    assert_eq!(store.contacts().unwrap(), [contact]);

    // A file holding only garbage lists nothing and does not count as a contact.
    fs::write(dir.join("junk-0000.jsonl"), b"\x00\x01garbage").unwrap();
    assert_eq!(store.contacts().unwrap(), [contact]);
}

#[test]
fn a_one_megabyte_text_round_trips() {
    let dir = TempDir::new("messages-big");
    let store = MessageStore::new(&dir);
    let mut text = String::new();
    let mut i = 0u32;
    while text.len() < 1024 * 1024 {
        text.push_str(&format!("line {i} \"quoted\" \\ é 😀 \u{2028}\t\r\n"));
        i += 1;
    }
    text.push('\0');
    let message = incoming(&text, 5);
    store.store("sip:big@example.com", &message).unwrap();
    store
        .store("sip:big@example.com", &incoming("after", 6))
        .unwrap();
    let listed = store.list("sip:big@example.com").unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], message);
    assert_eq!(listed[1].text, "after");
}

#[test]
fn over_long_lines_are_refused_and_skipped() {
    let dir = TempDir::new("messages-long");
    let store = MessageStore::new(&dir);
    let contact = "sip:long@example.com";
    let huge = "x".repeat(messages::MAX_LINE);
    assert!(store.store(contact, &incoming(&huge, 1)).is_err());
    assert!(store.list(contact).unwrap().is_empty());
    // A line over the limit found in a file is skipped, the rest is read.
    let path = store.path_for(contact);
    let mut bytes = huge.into_bytes();
    bytes.extend_from_slice(b"yy\n");
    fs::write(&path, bytes).unwrap();
    store.store(contact, &incoming("fits", 2)).unwrap();
    let listed = store.list(contact).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].text, "fits");
}

#[test]
fn write_errors_are_errors() {
    let dir = TempDir::new("messages-errors");
    let blocker = dir.join("messages");
    fs::write(&blocker, "a file where the folder should be").unwrap();
    let store = MessageStore::beside_ini(&dir.join("microsip.ini"));
    assert!(store.store("sip:x@y", &incoming("lost?", 1)).is_err());
    assert!(store.list("sip:x@y").is_err() || store.list("sip:x@y").unwrap().is_empty());
    assert!(store.contacts().is_err());
}

/// Run in a child process: stores a message, says so, and waits to be killed.
#[test]
fn child_store_then_wait_for_sigkill() {
    let Some(dir) = std::env::var_os("MESSAGES_KILL_CHILD") else {
        return;
    };
    let store = MessageStore::new(PathBuf::from(dir));
    store
        .store("sip:bob@example.com", &incoming("survives SIGKILL", 9))
        .unwrap();
    println!("STORED");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn a_stored_message_survives_sigkill() {
    let dir = TempDir::new("messages-kill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_store_then_wait_for_sigkill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MESSAGES_KILL_CHILD", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = false;
    for line in BufReader::new(stdout).lines() {
        if line.unwrap().contains("STORED") {
            seen = true;
            break;
        }
    }
    assert!(seen);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let listed = MessageStore::new(&dir).list("sip:bob@example.com").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].text, "survives SIGKILL");
}

#[test]
fn a_message_file_that_is_not_a_regular_file_is_refused_and_left() {
    use std::os::unix::fs::FileTypeExt;
    let dir = TempDir::new("messages-fifo");
    let store = MessageStore::new(dir.join("messages"));
    store
        .store("sip:bob@example.com", &incoming("first", 1))
        .unwrap();
    let path = store.path_for("sip:carol@example.com");
    mkfifo(&path);
    // Neither waits for a reader or writer of the FIFO nor replaces it.
    let err = store
        .store("sip:carol@example.com", &incoming("hi", 2))
        .unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(store.list("sip:carol@example.com").is_err());
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_fifo());
    // Other contacts are not affected.
    assert_eq!(store.list("sip:bob@example.com").unwrap().len(), 1);
}
