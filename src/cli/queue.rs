//! `postern queue`: the mail queue of the running server, every node's when they share
//! settings, in `postqueue -p`'s layout; hold, release, delete and retry as postsuper and
//! postqueue -f do.

use std::net::SocketAddr;

use hyper::Method;
use postern::admin::client::ApiClient;
use postern::admin::cluster::{ClusterListing, NodeAnswer};
use postern::admin::queue::{Done, QueueItem};
use postern::config::Config;
use postern::printable::escaped;

use super::{api_client, parse_response, url_escape};

#[derive(clap::Subcommand)]
pub enum QueueAction {
    /// List queued messages, like `postqueue -p` (`!` after the ID: on hold).
    List {
        /// Only senders containing this text.
        #[arg(long)]
        sender: Option<String>,
        /// Only messages with a recipient containing this text.
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Envelope, per-recipient state, last error and headers of one message.
    Show { id: String },
    /// Try delivery now: one message, or every message not on hold (`--all`, postqueue -f).
    Retry {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Put a message on hold (postsuper -h): kept, not delivered.
    Hold { id: String },
    /// Release a held message (postsuper -H).
    Release { id: String },
    /// Delete a message without delivery or bounce (postsuper -d).
    Delete { id: String },
    /// Spool segments found damaged at start-up, kept in spool/damaged/, and what was lost.
    Damaged {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(
    config: Config,
    api: Option<SocketAddr>,
    action: QueueAction,
) -> anyhow::Result<()> {
    let client = api_client(&config, api)?;
    match action {
        QueueAction::List {
            sender,
            recipient,
            json,
        } => list(&client, sender, recipient, json).await,
        QueueAction::Show { id } => show(&client, &id).await,
        QueueAction::Retry { all: true, .. } => retry_all(&client).await,
        QueueAction::Retry { id: Some(id), .. } => act(&client, "retry", &id).await,
        QueueAction::Retry {
            id: None,
            all: false,
        } => anyhow::bail!("queue retry: give a queue ID, or --all"),
        QueueAction::Hold { id } => act(&client, "hold", &id).await,
        QueueAction::Release { id } => act(&client, "release", &id).await,
        QueueAction::Delete { id } => act(&client, "delete", &id).await,
        QueueAction::Damaged { json } => damaged(&client, &config, json).await,
    }
}

/// One message, on whichever node holds it (`ID@node`, or an ID one node has).
async fn act(client: &ApiClient, action: &str, id: &str) -> anyhow::Result<()> {
    let path = format!("/api/v1/cluster/queue/{}/{action}", url_escape(id));
    let (status, body) = client.request(Method::POST, &path, None).await?;
    let done: Done = parse_response(status, &body)?;
    // What was found already so, as postsuper(1) counts only what it changed.
    let unchanged = match done.action.as_str() {
        "hold" => "already on hold",
        "release" => "not on hold",
        "retry" => "on hold: not retried (release it to send it)",
        _ => "unchanged",
    };
    if done.changed {
        eprintln!("postern: {}: {}", done.id, done.action);
    } else {
        eprintln!("postern: {}: {unchanged}", done.id);
    }
    Ok(())
}

/// `queue list`: every node's queue (one node's on its own); messages of several nodes
/// are named `ID@node`.
async fn list(
    client: &ApiClient,
    sender: Option<String>,
    recipient: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(s) = sender {
        query.push(format!("sender={}", url_escape(&s)));
    }
    if let Some(r) = recipient {
        query.push(format!("recipient={}", url_escape(&r)));
    }
    let path = format!("/api/v1/cluster/queue?{}", query.join("&"));
    let (status, body) = client.request(Method::GET, &path, None).await?;
    let listing: ClusterListing = parse_response(status, &body)?;
    let several = listing.several();
    let mut items = listing.items;
    if several {
        for i in &mut items {
            i.id = format!("{}@{}", i.id, i.node.as_deref().unwrap_or(""));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        print!("{}", postqueue_listing(&items));
    }
    silent_nodes(&listing.nodes, listing.registry_error.as_deref())
}

async fn show(client: &ApiClient, id: &str) -> anyhow::Result<()> {
    let (status, body) = client
        .request(Method::GET, &format!("/api/v1/cluster/queue/{id}"), None)
        .await?;
    let item: QueueItem = parse_response(status, &body)?;
    print!("{}", message_text(&item));
    Ok(())
}

/// `queue retry --all`, as `postqueue -f`: every node asked; one that did not answer is
/// named and makes the exit code 1.
async fn retry_all(client: &ApiClient) -> anyhow::Result<()> {
    let (status, body) = client
        .request(Method::POST, "/api/v1/cluster/queue/retry", None)
        .await?;
    let done: serde_json::Value = parse_response(status, &body)?;
    let count = done["done"].as_array().map_or(0, Vec::len);
    eprintln!("postern: {count} message(s) scheduled for delivery now");
    let failed = done["failed"].as_array().cloned().unwrap_or_default();
    for f in &failed {
        eprintln!("postern: {}", f["error"].as_str().unwrap_or(""));
    }
    anyhow::ensure!(failed.is_empty(), "{} node(s) did not answer", failed.len());
    Ok(())
}

async fn damaged(client: &ApiClient, config: &Config, json: bool) -> anyhow::Result<()> {
    let (status, body) = client
        .request(Method::GET, "/api/v1/queue/damaged", None)
        .await?;
    let damage: Vec<postern::spool::Damage> = parse_response(status, &body)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&damage)?);
    } else {
        print!("{}", damage_text(&damage, &config.spool_dir()));
    }
    Ok(())
}

/// Nodes whose messages a listing could not show, said on stderr; an error when any.
fn silent_nodes(nodes: &[NodeAnswer], registry_error: Option<&str>) -> anyhow::Result<()> {
    if let Some(e) = registry_error {
        eprintln!("postern: the node list cannot be read ({e}): the nodes known before were asked");
    }
    let silent: Vec<_> = nodes.iter().filter(|n| !n.answered).collect();
    for n in &silent {
        let at = n.api.as_deref().unwrap_or("no address");
        eprintln!(
            "postern: node {} ({at}) did not answer: {}; its messages are not listed",
            n.name,
            n.error.as_deref().unwrap_or("")
        );
    }
    anyhow::ensure!(silent.is_empty(), "{} node(s) did not answer", silent.len());
    Ok(())
}

/// `postqueue -p`'s layout: ID (with `!` when held), size, arrival, sender; then the last
/// error in parentheses and the pending recipients, indented.
pub fn postqueue_listing(items: &[QueueItem]) -> String {
    if items.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out =
        String::from("-Queue ID-      --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
    let mut bytes = 0usize;
    for item in items {
        bytes += item.size;
        let arrival = time::OffsetDateTime::from_unix_timestamp(item.arrival_unix as i64)
            .ok()
            .and_then(|t| t.format(time::macros::format_description!("[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second]")).ok())
            .unwrap_or_default();
        let id = format!("{}{}", item.id, if item.held { "!" } else { "" });
        // Addresses and a next hop's words come from outside: escaped for the terminal.
        let sender = if item.sender.is_empty() {
            "MAILER-DAEMON".into()
        } else {
            escaped(&item.sender)
        };
        out.push_str(&format!(
            "{id:<15} {:>8} {arrival:<20} {sender}\n",
            item.size
        ));
        if let Some(e) = &item.last_error {
            out.push_str(&format!("{:42}({})\n", "", escaped(e)));
        }
        for r in item.recipients.iter().filter(|r| r.state == "pending") {
            out.push_str(&format!("{:42}{}\n", "", escaped(&r.address)));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "-- {} Kbytes in {} Request{}.\n",
        bytes.div_ceil(1024),
        items.len(),
        if items.len() == 1 { "" } else { "s" }
    ));
    out
}

/// `queue show`: the message's listing, its node, each recipient's state, the attempts,
/// then its header section.
fn message_text(item: &QueueItem) -> String {
    let mut out = postqueue_listing(std::slice::from_ref(item));
    if let Some(node) = &item.node {
        out.push_str(&format!("node: {}\n", escaped(node)));
    }
    for r in &item.recipients {
        out.push_str(&format!("recipient {}: {}\n", escaped(&r.address), r.state));
    }
    out.push_str(&format!("attempts: {}\n", item.attempts));
    // The sender's bytes reach a terminal: line by line, escaped (issue 27).
    let headers = item.headers.as_deref().unwrap_or_default();
    let lines: Vec<_> = headers.trim_end().lines().map(escaped).collect();
    out.push_str(&format!("\n{}\n", lines.join("\n")));
    out
}

/// `queue damaged`: one line per damaged region, and where the segments are kept.
fn damage_text(damage: &[postern::spool::Damage], spool_dir: &std::path::Path) -> String {
    if damage.is_empty() {
        return "no damaged spool segments\n".into();
    }
    let mut out = String::new();
    for d in damage {
        out.push_str(&format!(
            "{}: {} bytes unreadable at offset {} ({})\n",
            d.segment, d.bytes, d.offset, d.why
        ));
    }
    out.push_str(&format!(
        "-- kept in {}/damaged/; intact messages in them were recovered\n",
        spool_dir.display()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern::admin::queue::RecipientView;

    /// Tue Nov 14 2023 22:13:20 UTC.
    const ARRIVAL: u64 = 1_700_000_000;

    fn item(id: &str, size: usize, sender: &str, recipients: &[(&str, &str)]) -> QueueItem {
        QueueItem {
            id: id.into(),
            node: None,
            arrival_unix: ARRIVAL,
            size,
            sender: sender.into(),
            recipients: recipients
                .iter()
                .map(|(address, state)| RecipientView {
                    address: (*address).into(),
                    state: (*state).into(),
                })
                .collect(),
            client_ip: "192.0.2.7".into(),
            helo: "client.example".into(),
            held: false,
            attempts: 0,
            last_error: None,
            last_attempt_unix: None,
            next_attempt_unix: None,
            headers: None,
            body: None,
        }
    }

    /// `postqueue -p`: held `!`, the bounce sender as MAILER-DAEMON, the last error in
    /// parentheses (a terminal escape in it shown, not sent), pending recipients only, the
    /// Kbytes rounded up.
    #[test]
    fn queue_list_is_postqueues_layout() {
        let mut held = item(
            "4F2A1B3C9D",
            2048,
            "sender@example.com",
            &[("a@example.org", "delivered"), ("b@example.org", "pending")],
        );
        held.held = true;
        held.last_error = Some("452 4.2.2 mailbox full \x1b[31m".into());
        let bounce = item("7A0000000001@gw2", 300, "", &[("c@example.org", "pending")]);
        let indent = " ".repeat(42);
        assert_eq!(
            postqueue_listing(&[held, bounce]),
            format!(
                "-Queue ID-      --Size-- ----Arrival Time---- -Sender/Recipient-------\n\
                 4F2A1B3C9D!         2048 Tue Nov 14 22:13:20  sender@example.com\n\
                 {indent}(452 4.2.2 mailbox full \\x1b[31m)\n\
                 {indent}b@example.org\n\
                 \n\
                 7A0000000001@gw2      300 Tue Nov 14 22:13:20  MAILER-DAEMON\n\
                 {indent}c@example.org\n\
                 \n\
                 -- 3 Kbytes in 2 Requests.\n"
            )
        );
    }

    #[test]
    fn an_empty_queue_says_so_and_one_message_is_one_request() {
        assert_eq!(postqueue_listing(&[]), "Mail queue is empty\n");
        let one = postqueue_listing(&[item("1A", 1, "s@example.com", &[])]);
        assert!(one.ends_with("\n\n-- 1 Kbytes in 1 Request.\n"), "{one}");
    }

    /// `queue show`: the listing, the node, every recipient's state, attempts, then the
    /// header section line by line with control characters escaped.
    #[test]
    fn queue_show_adds_node_states_attempts_and_headers() {
        let mut m = item(
            "4F2A1B3C9D",
            900,
            "sender@example.com",
            &[("a@example.org", "delivered"), ("b@example.org", "pending")],
        );
        m.node = Some("gw1".into());
        m.attempts = 2;
        m.headers = Some("Subject: hi\x07\r\nFrom: s@example.com\r\n\r\n".into());
        let indent = " ".repeat(42);
        assert_eq!(
            message_text(&m),
            format!(
                "-Queue ID-      --Size-- ----Arrival Time---- -Sender/Recipient-------\n\
                 4F2A1B3C9D           900 Tue Nov 14 22:13:20  sender@example.com\n\
                 {indent}b@example.org\n\
                 \n\
                 -- 1 Kbytes in 1 Request.\n\
                 node: gw1\n\
                 recipient a@example.org: delivered\n\
                 recipient b@example.org: pending\n\
                 attempts: 2\n\
                 \n\
                 Subject: hi\\x07\n\
                 From: s@example.com\n"
            )
        );
    }

    #[test]
    fn queue_damaged_names_each_region_and_where_it_is_kept() {
        let damage = [postern::spool::Damage {
            segment: "00000003.seg".into(),
            offset: 4096,
            bytes: 512,
            why: "checksum mismatch".into(),
        }];
        assert_eq!(
            damage_text(&damage, std::path::Path::new("/var/lib/postern/spool")),
            "00000003.seg: 512 bytes unreadable at offset 4096 (checksum mismatch)\n\
             -- kept in /var/lib/postern/spool/damaged/; intact messages in them were recovered\n"
        );
        assert_eq!(
            damage_text(&[], std::path::Path::new("/x")),
            "no damaged spool segments\n"
        );
    }
}
