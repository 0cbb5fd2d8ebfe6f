//! Real files in a temp folder: round trip, UTF-16, raw values, atomic private saves.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;

use microsip_config::{default_document, IniFile, SourceEncoding};
use microsip_test_support::TempDir;

const WINDOWS_INI: &str = "; written by hand\r\n\
    \r\n\
    [Settings]\r\n\
    accountId=1\r\n\
    someFutureKey=  spaced value  \r\n\
    # another comment\r\n\
    %%% garbage line %%%\r\n\
    \r\n\
    [Account1]\r\n\
    label=Office\r\n\
    server=sip.example.com:5060\r\n\
    domain=example.com\r\n\
    username=1005\r\n\
    password=p;w#1005\r\n\
    \r\n\
    [Plugins]\r\n\
    thing=1\r\n\
    [Calls]\r\n\
    0=1002;Bob;0;1700000000;12;\r\n";

#[test]
fn round_trip_is_byte_identical_and_set_changes_one_line() {
    let dir = TempDir::new("roundtrip");
    let path = dir.path().join("microsip.ini");
    fs::write(&path, WINDOWS_INI).unwrap();

    let mut file = IniFile::load(&path).unwrap();
    assert!(file.existed());
    assert_eq!(file.problems().len(), 1);
    assert_eq!(file.problems()[0].line, 7);
    assert_eq!(file.doc().to_bytes(), WINDOWS_INI.as_bytes());

    file.save().unwrap();
    assert_eq!(fs::read(&path).unwrap(), WINDOWS_INI.as_bytes());

    file.set("settings", "ACCOUNTID", "0").unwrap();
    file.save().unwrap();
    let after = fs::read_to_string(&path).unwrap();
    assert_eq!(
        after,
        WINDOWS_INI.replace("accountId=1\r\n", "accountId=0\r\n")
    );
    let changed: Vec<(&str, &str)> = WINDOWS_INI
        .split("\r\n")
        .zip(after.split("\r\n"))
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed, vec![("accountId=1", "accountId=0")]);

    // A new key goes after the last key of its section, with the file's line ending.
    file.set("Account1", "transport", "tls").unwrap();
    file.save().unwrap();
    let after = fs::read_to_string(&path).unwrap();
    assert!(after.contains("password=p;w#1005\r\ntransport=tls\r\n\r\n[Plugins]"));
}

#[test]
fn utf16le_with_bom_is_read_and_written_back_as_utf8() {
    let dir = TempDir::new("utf16");
    let path = dir.path().join("microsip.ini");
    let text = "[Settings]\r\naccountId=1\r\nringingSound=C:\\Sounds\\ring é.wav\r\n\
                [Account1]\r\ndomain=example.com\r\ndisplayName=Zoë Ölund\r\npassword=p;w#1005\r\n";
    let mut bytes = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    fs::write(&path, &bytes).unwrap();

    let mut file = IniFile::load(&path).unwrap();
    assert!(file.problems().is_empty());
    assert_eq!(file.doc().encoding(), SourceEncoding::Utf16Le);
    let config = file.config();
    assert!(config.problems.is_empty(), "{:?}", config.problems);
    let account = config.active_account().unwrap();
    assert_eq!(account.display_name.as_deref(), Some("Zoë Ölund"));
    assert_eq!(account.password.as_deref(), Some("p;w#1005"));
    assert_eq!(
        config.settings.ringing_sound.as_deref(),
        Some("C:\\Sounds\\ring é.wav")
    );

    file.save().unwrap();
    assert_eq!(fs::read(&path).unwrap(), text.as_bytes());
    let again = IniFile::load(&path).unwrap();
    assert_eq!(again.doc().encoding(), SourceEncoding::Utf8);
    assert_eq!(
        again.doc().get("Account1", "displayName"),
        Some("Zoë Ölund")
    );
}

#[test]
fn semicolons_and_hashes_in_values_survive_a_save() {
    let dir = TempDir::new("raw");
    let path = dir.path().join("microsip.ini");
    fs::write(
        &path,
        "[Settings]\nrecordingPath=C:\\x;y\n[Account1]\ndomain=d\npassword=p;w#1005\n",
    )
    .unwrap();
    let mut file = IniFile::load(&path).unwrap();
    file.set("Settings", "volumeRing", "50").unwrap();
    file.save().unwrap();

    let file = IniFile::load(&path).unwrap();
    assert_eq!(file.doc().get("Account1", "password"), Some("p;w#1005"));
    assert_eq!(file.doc().get("Settings", "recordingPath"), Some("C:\\x;y"));
    let config = file.config();
    assert_eq!(config.settings.recording_path, "C:\\x;y");
    assert_eq!(config.settings.volume_ring, 50);
    assert_eq!(config.accounts[1].password.as_deref(), Some("p;w#1005"));
}

#[test]
fn saved_file_is_private_even_if_it_was_not() {
    let dir = TempDir::new("mode");
    let path = dir.path().join("microsip.ini");
    fs::write(&path, "[Settings]\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut file = IniFile::load(&path).unwrap();
    file.set("Settings", "DND", "1").unwrap();
    file.save().unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // No temporary file is left behind.
    assert_eq!(dir.names(), vec!["microsip.ini"]);
}

#[test]
fn failed_save_leaves_the_old_file_whole_and_names_the_path() {
    let dir = TempDir::new("fail");
    let path = dir.path().join("microsip.ini");
    let old = "[Settings]\naccountId=1\n";
    fs::write(&path, old).unwrap();
    let mut file = IniFile::load(&path).unwrap();
    file.set("Settings", "accountId", "2").unwrap();

    // The temporary path is taken by a folder: creating the temporary file fails.
    let tmp = dir
        .path()
        .join(format!("microsip.ini.tmp-{}", std::process::id()));
    fs::create_dir(&tmp).unwrap();
    let err = file.save().unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&tmp.display().to_string()), "{message}");
    assert!(message.contains("cannot create"), "{message}");
    assert_eq!(fs::read_to_string(&path).unwrap(), old);
    assert!(tmp.is_dir());
    fs::remove_dir(&tmp).unwrap();

    // A read-only folder (only meaningful when not root: root ignores permissions).
    if unsafe { libc::geteuid() } != 0 {
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
        let err = file.save().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), old);
    }

    // And once the way is clear, the save works.
    file.save().unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "[Settings]\naccountId=2\n"
    );
}

#[test]
fn first_run_writes_the_default_profile() {
    let dir = TempDir::new("first");
    let path = dir.path().join("xdg/microsip/microsip.ini");
    let mut file = IniFile::load(&path).unwrap();
    assert!(!file.existed());
    *file.doc_mut() = default_document();
    file.save().unwrap();
    let folder_mode = fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(folder_mode & 0o077, 0);
    let config = IniFile::load(&path).unwrap().config();
    assert!(config.problems.is_empty(), "{:?}", config.problems);
    assert_eq!(config.settings.account_id, 0);
    let local = config.active_account().unwrap();
    assert_eq!(local.label.as_deref(), Some("Local"));
    assert_eq!(local.domain, "127.0.0.1");
    assert_eq!(local.username.as_deref(), Some("microsip"));
    assert!(local.server.is_none());
}

#[test]
fn not_utf8_without_bom_is_read_as_ansi_and_reported() {
    let dir = TempDir::new("ansi");
    let path = dir.path().join("microsip.ini");
    fs::write(&path, b"[Account1]\ndomain=d\ndisplayName=Jos\xe9\n").unwrap();
    let file = IniFile::load(&path).unwrap();
    let config = file.config();
    assert_eq!(config.accounts[1].display_name.as_deref(), Some("José"));
    assert_eq!(config.problems.len(), 1);
    assert!(config.problems[0].to_string().contains("Windows-1252"));
}
