//! One mail transaction (RFC 5321 section 3.3): MAIL, the RCPTs, DATA and the body; with
//! PIPELINING (RFC 2920) when the server offers it.

use super::super::classify::{Class, Outcome, Stage};
use super::Job;
use super::conn::Conn;
use super::ehlo::Extensions;
use crate::proto::Reply;

/// MAIL, RCPTs, DATA: one outcome per recipient.
pub(super) async fn transaction(
    conn: &mut Conn,
    job: &Job<'_>,
    ext: &Extensions,
    name: &str,
) -> Result<Vec<Outcome>, Outcome> {
    let (mail_reply, rcpt_replies, data_reply) = envelope(conn, job, ext).await?;
    let mail = checked(Outcome::from_reply(&mail_reply, name, Stage::Mail))?;
    if mail.class != Class::Delivered {
        end_empty_data(conn, data_reply.as_ref()).await?;
        return Ok(vec![mail; job.recipients.len()]);
    }
    let mut results: Vec<Option<Outcome>> = Vec::with_capacity(rcpt_replies.len());
    for r in &rcpt_replies {
        let o = checked(Outcome::from_reply(r, name, Stage::Rcpt))?;
        results.push((o.class != Class::Delivered).then_some(o));
    }
    let accepted = results.iter().filter(|r| r.is_none()).count();
    let data_reply = match data_reply {
        Some(r) => r,
        None if accepted == 0 => Reply::from_lines(503, vec!["no recipients accepted".into()]),
        None => conn.command("DATA", "DATA").await?,
    };
    if accepted == 0 {
        end_empty_data(conn, Some(&data_reply)).await?;
        let _ = conn.command("RSET", "RSET").await;
        return Ok(results.into_iter().flatten().collect());
    }
    let data = checked(Outcome::from_reply(&data_reply, name, Stage::Data))?;
    let final_outcome = if data.class == Class::Delivered {
        conn.write_message(job.message).await?;
        let end = conn.read_reply("end of DATA").await?;
        checked(Outcome::from_reply(&end, name, Stage::EndOfData))?
    } else {
        data
    };
    Ok(results
        .iter_mut()
        .map(|r| r.take().unwrap_or_else(|| final_outcome.clone()))
        .collect())
}

/// The replies to MAIL, each RCPT and (pipelined) DATA.
type EnvelopeReplies = (Reply, Vec<Reply>, Option<Reply>);

/// MAIL FROM with the parameters the server supports, and the RCPTs: with PIPELINING
/// (RFC 2920) MAIL, every RCPT and DATA in one write; without it one command at a time,
/// no RCPT after a refused MAIL.
async fn envelope(
    conn: &mut Conn,
    job: &Job<'_>,
    ext: &Extensions,
) -> Result<EnvelopeReplies, Outcome> {
    let mut mail = format!("MAIL FROM:<{}>", job.sender);
    if ext.size.is_some() {
        mail.push_str(&format!(" SIZE={}", job.message.len()));
    }
    if job.eight_bit && ext.eight_bit {
        mail.push_str(" BODY=8BITMIME");
    }
    if job.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    if job.requiretls {
        mail.push_str(" REQUIRETLS");
    }
    let rcpt_lines: Vec<String> = job
        .recipients
        .iter()
        .map(|r| format!("RCPT TO:<{r}>"))
        .collect();
    if ext.pipelining && ext.esmtp {
        let mut batch = format!("{mail}\r\n");
        for r in &rcpt_lines {
            batch.push_str(r);
            batch.push_str("\r\n");
        }
        batch.push_str("DATA\r\n");
        conn.write(batch.as_bytes(), "sending MAIL FROM").await?;
        let mail_reply = conn.read_reply("MAIL FROM").await?;
        let mut rcpt_replies = Vec::with_capacity(rcpt_lines.len());
        for _ in &rcpt_lines {
            rcpt_replies.push(conn.read_reply("RCPT TO").await?);
        }
        let data_reply = conn.read_reply("DATA").await?;
        return Ok((mail_reply, rcpt_replies, Some(data_reply)));
    }
    let mail_reply = conn.command(&mail, "MAIL FROM").await?;
    let mut rcpt_replies = Vec::new();
    if Stage::Mail.accepts(mail_reply.code) {
        for r in &rcpt_lines {
            rcpt_replies.push(conn.command(r, "RCPT TO").await?);
        }
    }
    Ok((mail_reply, rcpt_replies, None))
}

/// A protocol error ends the whole session: nothing after it can be trusted (a 250 to DATA
/// means the server never waited for the body).
fn checked(o: Outcome) -> Result<Outcome, Outcome> {
    if o.protocol_error { Err(o) } else { Ok(o) }
}

/// A pipelined DATA that got 354 although nothing else was accepted must still be ended,
/// with an empty message the server will refuse for want of recipients.
async fn end_empty_data(conn: &mut Conn, data_reply: Option<&Reply>) -> Result<(), Outcome> {
    if data_reply.is_some_and(|r| Stage::Data.accepts(r.code)) {
        conn.write(b".\r\n", "ending an empty DATA").await?;
        conn.read_reply("end of empty DATA").await?;
    }
    Ok(())
}
