//! `Contacts.xml`: round trips, escaping, encodings, unknown attributes kept, DTDs
//! refused, and no panic on any input.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use microsip_test_support::{mkfifo, TempDir};
use std::fs;

use microsip_control::contacts::{self, AddOutcome, Contact, ContactsError, ContactsFile};

const MICROSIP_FILE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- written by MicroSIP -->
<contacts>
<contact number="101" name="Alice &amp; Bob" firstname="Alice" lastname="" phone="" mobile="" email="a@example.com" address="" city="" state="" zip="" comment="line1&#10;line2" id="" info="" presence="1" starred="1" directory="0"/>
<contact name='Carol' number='102' presence='0' custom-x="keep me"></contact>
</contacts>
"#;

#[test]
fn add_list_remove_round_trip() {
    let dir = TempDir::new("contacts-roundtrip");
    let file = ContactsFile::beside_ini(&dir.join("microsip.ini"));
    assert_eq!(file.path(), dir.join("Contacts.xml"));
    assert!(file.list().unwrap().is_empty());
    assert_eq!(file.add("Alice", "101", true).unwrap(), AddOutcome::Added);
    assert_eq!(file.add("Bob", " 102 ", false).unwrap(), AddOutcome::Added);
    assert_eq!(
        file.add("Alice B.", "101", false).unwrap(),
        AddOutcome::Updated
    );
    let list = file.list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].name(), list[0].number(), list[0].presence()),
        ("Alice B.", "101", false)
    );
    assert_eq!(
        (list[1].name(), list[1].number(), list[1].presence()),
        ("Bob", "102", false)
    );
    assert!(file.remove("101").unwrap());
    assert!(!file.remove("101").unwrap());
    let list = file.list().unwrap();
    assert_eq!(list, [Contact::new("Bob", "102", false)]);
    assert_eq!(
        fs::read_to_string(file.path()).unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<contacts>\n<contact name=\"Bob\" number=\"102\" presence=\"0\"/>\n</contacts>\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(file.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(matches!(
        file.add("x", "  ", true),
        Err(ContactsError::Invalid(_))
    ));
}

#[test]
fn microsip_file_keeps_unknown_attributes() {
    let dir = TempDir::new("contacts-microsip");
    let file = ContactsFile::new(dir.join("Contacts.xml"));
    fs::write(file.path(), MICROSIP_FILE).unwrap();
    let list = file.list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name(), "Alice & Bob");
    assert_eq!(list[0].get("comment"), Some("line1\nline2"));
    assert!(list[0].presence());
    assert_eq!(list[1].get("custom-x"), Some("keep me"));

    file.add("Dave", "103", true).unwrap();
    file.remove("102").unwrap();
    let after = file.list().unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], list[0], "every attribute, in order");
    let names: Vec<&str> = after[0]
        .attributes
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names[..3], ["number", "name", "firstname"]);
    assert_eq!(names.last(), Some(&"directory"));
    assert_eq!(after[1], Contact::new("Dave", "103", true));
}

#[test]
fn escaping_round_trips() {
    let hostile = "Tom & \"Jerry\" <tom@x> 'q' \n\r\t &amp; &#x41; ]]> --> é 😀";
    let doc = contacts::ContactsDoc {
        root_attributes: vec![("version".into(), "1".into())],
        contacts: vec![Contact::new(hostile, "sip:\"1\"<2>@x", true)],
    };
    let xml = contacts::to_xml(&doc);
    assert!(!xml.contains("\"Jerry\""));
    assert!(xml.contains("Tom &amp; &quot;Jerry&quot; &lt;tom@x&gt; &apos;q&apos; &#10;&#13;&#9; &amp;amp; &amp;#x41;"));
    assert_eq!(xml.lines().count(), 4, "values never break lines");
    assert_eq!(contacts::parse(xml.as_bytes()).unwrap(), doc);
    // Characters XML cannot hold become U+FFFD.
    let doc = contacts::ContactsDoc {
        root_attributes: vec![],
        contacts: vec![Contact::new("a\u{0}b\u{1b}c\u{FFFF}", "1", false)],
    };
    let back = contacts::parse(contacts::to_xml(&doc).as_bytes()).unwrap();
    assert_eq!(back.contacts[0].name(), "a\u{FFFD}b\u{FFFD}c\u{FFFD}");
    // Invalid attribute names cannot be set.
    let mut c = Contact::default();
    assert!(!c.set("bad name", "x"));
    assert!(!c.set("a=\"b", "x"));
    assert!(c.set("ok", "x"));
}

fn utf16(text: &str, little: bool) -> Vec<u8> {
    let mut out = if little {
        vec![0xFF, 0xFE]
    } else {
        vec![0xFE, 0xFF]
    };
    for unit in text.encode_utf16() {
        out.extend_from_slice(&if little {
            unit.to_le_bytes()
        } else {
            unit.to_be_bytes()
        });
    }
    out
}

#[test]
fn encodings() {
    let text = "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\r\n<contacts>\r\n<contact name=\"Zoë 😀\" number=\"1\"/>\r\n</contacts>\r\n";
    for bytes in [
        utf16(text, true),
        utf16(text, false),
        [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat(),
        text.as_bytes().to_vec(),
    ] {
        let doc = contacts::parse(&bytes).unwrap();
        assert_eq!(doc.contacts[0].name(), "Zoë 😀");
    }
    // Not UTF-8, no mark: Latin-1.
    let latin1 = b"<contacts><contact name=\"Zo\xeb\" number=\"1\"/></contacts>";
    assert_eq!(contacts::parse(latin1).unwrap().contacts[0].name(), "Zoë");
    // A UTF-16 file is rewritten as UTF-8 with its contacts.
    let dir = TempDir::new("contacts-utf16");
    let file = ContactsFile::new(dir.join("Contacts.xml"));
    fs::write(file.path(), utf16(text, true)).unwrap();
    file.add("New", "2", false).unwrap();
    let written = fs::read_to_string(file.path()).unwrap();
    assert!(written.contains("name=\"Zoë 😀\""));
    assert_eq!(file.list().unwrap().len(), 2);
}

#[test]
fn dtds_and_entities_are_refused_and_the_file_is_kept() {
    let bombs = [
        "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><contacts><contact name=\"&lol2;\" number=\"1\"/></contacts>",
        "<!DOCTYPE contacts SYSTEM \"file:///etc/passwd\"><contacts/>",
        "<contacts><!ENTITY x \"y\"><contact name=\"a\" number=\"1\"/></contacts>",
    ];
    let dir = TempDir::new("contacts-dtd");
    let file = ContactsFile::new(dir.join("Contacts.xml"));
    for bomb in bombs {
        let err = contacts::parse(bomb.as_bytes()).unwrap_err();
        assert!(err.message.contains("not accepted"), "{err}");
        fs::write(file.path(), bomb).unwrap();
        assert!(matches!(
            file.add("x", "9", false),
            Err(ContactsError::Xml { .. })
        ));
        assert!(matches!(file.remove("1"), Err(ContactsError::Xml { .. })));
        assert_eq!(
            fs::read_to_string(file.path()).unwrap(),
            bomb,
            "left as it was"
        );
    }
    // An undefined entity reference is kept literally, not expanded.
    let doc = contacts::parse(b"<contacts><contact name=\"&lol; AT&T\" number=\"1\"/></contacts>")
        .unwrap();
    assert_eq!(doc.contacts[0].name(), "&lol; AT&T");
}

#[test]
fn structure_errors_name_the_line() {
    let cases = [
        (
            "<contacts>\n<contact name=\"a\" number=\"1\">\n</contacts>",
            3,
        ),
        ("<contacts>\n<contact name=\"a\" number=\"1\"/>\n", 3),
        ("<phonebook/>", 1),
        ("<contacts/>\n<contacts/>", 2),
        ("<contacts>\n<contact name=a/>\n</contacts>", 2),
        (
            "<contacts>\n<contact name=\"a\" name=\"b\"/>\n</contacts>",
            2,
        ),
        ("<contacts>\n<contact name=\"a/>\n</contacts>", 2),
        ("<contacts>\n<contact name/>\n</contacts>", 2),
        ("hello<contacts/>", 1),
        ("<contacts><!-- never closed", 1),
    ];
    for (text, line) in cases {
        let err = contacts::parse(text.as_bytes()).unwrap_err();
        assert_eq!(err.line, line, "{text:?}: {err}");
    }
    // Empty and declaration-only files are empty lists.
    assert!(contacts::parse(b"").unwrap().contacts.is_empty());
    assert!(contacts::parse(b"  <?xml version=\"1.0\"?>\n")
        .unwrap()
        .contacts
        .is_empty());
    // Other elements and text are skipped; nested contacts are not contacts.
    let doc = contacts::parse(
        b"<contacts>text<group><contact name=\"n\" number=\"0\"/></group><contact name=\"a\" number=\"1\">x<![CDATA[<y>]]></contact></contacts>",
    )
    .unwrap();
    assert_eq!(doc.contacts.len(), 1);
    assert_eq!(doc.contacts[0].number(), "1");
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parsing never panics; whatever parses survives a write and a re-read unchanged.
fn check(bytes: &[u8]) {
    if let Ok(doc) = contacts::parse(bytes) {
        let xml = contacts::to_xml(&doc);
        let again = contacts::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}: {xml}"));
        assert_eq!(again, doc, "{xml}");
    }
}

#[test]
fn hostile_input_never_panics() {
    let fixed: [&[u8]; 16] = [
        b"<",
        b"</",
        b"<>",
        b"<contacts",
        b"<contacts ",
        b"<contacts/",
        b"<contacts a=",
        b"<contacts a=\"",
        b"<contacts a=\"&",
        b"<contacts a=\"&#",
        b"<contacts a=\"&#x;&#;&#xD800;&#99999999999;\"/>",
        b"\xFF\xFE<\x00",
        b"\xFE\xFF\x00",
        b"\xEF\xBB\xBF\xFF\xFF<contacts/>",
        b"<contacts>\x00</contacts>",
        b"<contacts><contact \xC3\xA9=\"1\" \xE2\x82=\"2\"/></contacts>",
    ];
    for bytes in fixed {
        check(bytes);
    }
    // Deep nesting and many attributes are refused, not a stack overflow or a crawl.
    let deep = format!("<contacts>{}", "<a>".repeat(100_000));
    assert!(contacts::parse(deep.as_bytes()).is_err());
    let many: String = (0..5000).map(|i| format!(" a{i}=\"{i}\"")).collect();
    let many = format!("<contacts><contact{many}/></contacts>");
    assert!(contacts::parse(many.as_bytes()).is_err());

    // Every prefix of a real file, and random mutations of it.
    let base = MICROSIP_FILE.as_bytes();
    for end in 0..=base.len() {
        check(&base[..end]);
    }
    let alphabet: &[u8] = b"<>/=\"'&#;x!?-[]CDATA contact\n\r\t\x00\xC3\xA9\xFF\xFE";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let mut bytes = base.to_vec();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(3) {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 if at < bytes.len() => bytes[at] = alphabet[rng.below(alphabet.len())],
                _ => bytes.insert(at, alphabet[rng.below(alphabet.len())]),
            }
        }
        check(&bytes);
    }
    for _ in 0..5_000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        check(&bytes);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check(&bytes);
    }
}

#[test]
fn a_contacts_file_that_cannot_be_read_whole_is_never_replaced() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = TempDir::new("contacts-unreadable");
    let file = ContactsFile::beside_ini(&dir.join("microsip.ini"));

    // A FIFO: refused at once (no waiting for a writer), left a FIFO.
    mkfifo(file.path());
    assert!(file.list().is_err());
    let err = file.add("Alice", "101", true).unwrap_err();
    assert!(err.to_string().contains("FIFO"), "{err}");
    assert!(file.remove("101").is_err());
    assert!(fs::symlink_metadata(file.path())
        .unwrap()
        .file_type()
        .is_fifo());
    fs::remove_file(file.path()).unwrap();

    // Over the size limit (sparse): refused, same size, same inode.
    fs::write(file.path(), MICROSIP_FILE).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(file.path())
        .unwrap();
    f.set_len(microsip_config::MAX_FILE_SIZE + 1).unwrap();
    drop(f);
    let before = fs::metadata(file.path()).unwrap();
    let err = file.add("Alice", "101", true).unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    let after = fs::metadata(file.path()).unwrap();
    assert_eq!(
        (after.ino(), after.len()),
        (before.ino(), microsip_config::MAX_FILE_SIZE + 1)
    );
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("Contacts.xml")]);
}
