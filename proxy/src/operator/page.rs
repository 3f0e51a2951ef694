//! The console's HTML: a sign-in page and the status page, rendered on the server so both read
//! without JavaScript. Every value is escaped; the page loads only the console's own script
//! and style (its content security policy allows nothing else).

use std::fmt::Write as _;

use super::status::{ProviderView, Status};
use crate::audit::AuditEntry;
use crate::wire::headers::CONSOLE_CSRF_FIELD;

pub const SCRIPT: &str = include_str!("assets/console.js");
pub const STYLE: &str = include_str!("assets/console.css");

/// Text for HTML content or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/console.css\">\
         <script src=\"/console.js\" defer></script></head><body>{body}</body></html>\n",
        escape(title)
    )
}

pub fn login(message: Option<&str>) -> String {
    let message = message.map_or_else(String::new, |m| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m))
    });
    document(
        "xsigate console: sign in",
        &format!(
            "<main><section class=\"login\"><h2>xsigate operator console</h2>{message}\
             <form method=\"post\" action=\"/login\">\
             <label for=\"user\">Operator</label>\
             <input id=\"user\" name=\"user\" type=\"text\" autocomplete=\"username\" required>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form></section></main>"
        ),
    )
}

fn since(ms: u64) -> String {
    let now = xsigate_plugin_sdk::unix_ms();
    if ms == 0 || ms > now {
        return "-".to_owned();
    }
    let seconds = (now - ms) / 1000;
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        _ => format!("{} h ago", seconds / 3600),
    }
}

fn figure(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = write!(
        out,
        "<div class=\"figure\"><b>{}</b>{}</div>",
        escape(&value.to_string()),
        escape(label)
    );
}

fn provider_section(out: &mut String, id: &str, view: &ProviderView) {
    let _ = write!(
        out,
        "<section data-provider=\"{0}\"><h2>Provider {0}</h2>",
        escape(id)
    );
    out.push_str("<div class=\"grid\">");
    figure(out, "active sessions", view.sessions);
    for (plugin, status) in &view.plugins {
        for (name, count) in &status.counts {
            figure(out, &format!("{plugin}: {}", name.replace('_', " ")), count);
        }
    }
    out.push_str("</div><h3>XSPs</h3><table><tr><th>XSP</th><th>health</th><th>probe</th></tr>");
    for xsp in &view.xsps {
        let probe = xsp
            .probe_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"));
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{1}\">{1}</td><td>{2}</td></tr>",
            escape(&xsp.name),
            xsp.state,
            escape(&probe)
        );
    }
    out.push_str("</table>");
    let failing: Vec<_> = view
        .plugins
        .iter()
        .flat_map(|(plugin, status)| status.failing.iter().map(move |f| (plugin, f)))
        .collect();
    out.push_str("<h3>Failing</h3>");
    if failing.is_empty() {
        out.push_str("<p>Nothing is failing.</p>");
    } else {
        out.push_str(
            "<table class=\"failing-list\"><tr><th>user</th><th>plugin</th><th>reason</th>\
             <th>since</th></tr>",
        );
        for (plugin, item) in failing {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"failing\">{}</td><td>{}</td></tr>",
                escape(&item.user),
                escape(plugin),
                escape(&item.reason),
                since(item.since_ms)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}

fn audit_table(out: &mut String, title: &str, entries: &[AuditEntry]) {
    let _ = write!(out, "<h3>{}</h3>", escape(title));
    if entries.is_empty() {
        out.push_str("<p>None since start.</p>");
        return;
    }
    out.push_str(
        "<table class=\"audit\"><tr><th>when</th><th>who</th><th>what</th><th>subject</th>\
         <th>result</th></tr>",
    );
    for entry in entries {
        let _ = write!(
            out,
            "<tr><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td><td class=\"{4}\">{4}</td></tr>",
            since(entry.at_ms),
            escape(&entry.actor),
            entry.action.as_str(),
            escape(&entry.subject),
            entry.result.as_str()
        );
    }
    out.push_str("</table>");
}

pub fn status(operator: &str, csrf: &str, status: &Status, notice: Option<&str>) -> String {
    let mut main = String::new();
    if let Some(notice) = notice {
        let _ = write!(
            main,
            "<p class=\"notice\" role=\"status\">{}</p>",
            escape(notice)
        );
    }
    main.push_str("<section><h2>Gateway</h2><div class=\"grid\">");
    figure(&mut main, "version", status.version);
    figure(&mut main, "uptime, seconds", status.uptime_seconds);
    figure(
        &mut main,
        "store",
        if status.store.healthy {
            format!("ok, {:.1} ms", status.store.latency_ms)
        } else {
            "failing".to_owned()
        },
    );
    figure(
        &mut main,
        "configuration",
        &status.config_sha256[..12.min(status.config_sha256.len())],
    );
    main.push_str("</div>");
    let failures: Vec<String> = status
        .plugin_failures
        .iter()
        .flat_map(|(plugin, hooks)| {
            hooks
                .iter()
                .map(move |(hook, count)| format!("{plugin} {hook}: {count}"))
        })
        .chain(
            status
                .plugins_silent
                .iter()
                .map(|(plugin, state)| format!("{plugin}: status {state}")),
        )
        .collect();
    main.push_str("<h3>Plugin errors and timeouts</h3>");
    if failures.is_empty() {
        main.push_str("<p>None since start.</p>");
    } else {
        main.push_str("<ul>");
        for failure in failures {
            let _ = write!(main, "<li class=\"failed\">{}</li>", escape(&failure));
        }
        main.push_str("</ul>");
    }
    main.push_str("</section>");

    let _ = write!(
        main,
        "<section><h2>Act on a user</h2><form class=\"actions\" method=\"post\" \
         action=\"/actions/end_sessions\">\
         <input type=\"hidden\" name=\"{CONSOLE_CSRF_FIELD}\" value=\"{}\">\
         <input type=\"text\" name=\"user\" placeholder=\"user id\" aria-label=\"user id\" required>\
         <button type=\"submit\" formaction=\"/actions/end_sessions\">End sessions</button>\
         <button type=\"submit\" formaction=\"/actions/reopen_channel_set\">Reopen channel set</button>\
         <button type=\"submit\" formaction=\"/actions/resync\">Resync live state</button>\
         </form></section>",
        escape(csrf)
    );
    for (id, view) in &status.providers {
        provider_section(&mut main, id, view);
    }
    main.push_str("<section><h2>Audit</h2>");
    for (title, entries) in [
        ("Resets and operators", &status.audit.acts),
        ("Master credentials", &status.audit.master_credentials),
    ] {
        audit_table(&mut main, title, entries);
    }
    main.push_str("</section>");

    document(
        "xsigate console",
        &format!(
            "<header><h1>xsigate console</h1><form method=\"post\" action=\"/logout\">\
             <span>{} </span><input type=\"hidden\" name=\"{CONSOLE_CSRF_FIELD}\" value=\"{}\">\
             <button class=\"quiet\" type=\"submit\">Sign out</button></form></header>\
             <main>{main}</main>",
            escape(operator),
            escape(csrf)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        let page = login(Some("<script>alert(1)</script>"));
        assert!(!page.contains("<script>alert"));
    }
}
