//! docs/EVENTS.md must list every event type the code knows, with its current schema version.

#[test]
fn events_doc_lists_every_event_type_and_version() {
    let doc = include_str!("../../docs/EVENTS.md");
    for (event_type, version) in domain::Event::catalogue() {
        let row = format!("| `{event_type}` | {version} |");
        assert!(
            doc.contains(&row),
            "docs/EVENTS.md lacks the row starting {row}"
        );
    }
    let rows = doc.lines().filter(|l| l.starts_with("| `")).count();
    assert_eq!(
        rows,
        domain::Event::catalogue().len(),
        "docs/EVENTS.md lists types the code does not know"
    );
}
