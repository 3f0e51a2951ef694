//! `idle-load`: many idle client connections, as browsers leave them between requests. Opens
//! `--connections` connections to `--addr`, sends one GET on each and reads its answer whole,
//! then holds them all open, idle, until its standard input closes. Prints `held N` once all
//! are open, so that a script can measure the server's memory then; exits non-zero when any
//! connection failed or was not answered `200`.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

#[derive(Debug, Parser)]
#[command(about = "Holds many idle client connections, each after one request")]
struct Args {
    /// The server, e.g. 127.0.0.1:19083
    #[arg(long)]
    addr: String,
    /// Path of the request each connection sends before it goes idle.
    #[arg(long)]
    path: String,
    /// `Authorization` header of that request.
    #[arg(long)]
    authorization: String,
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 100)]
    parallel: usize,
}

/// Bounds each connection's request, so that a server that stops answering ends the run.
const ANSWER_TIME: Duration = Duration::from_secs(10);

/// One connection after its request was answered with a whole `200`.
async fn open(args: &Args) -> Result<BufReader<TcpStream>, String> {
    let mut stream = TcpStream::connect(&args.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: bench.example\r\nAuthorization: {}\r\n\r\n",
        args.path, args.authorization
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered {}", line.trim_end()));
    }
    let mut length = None;
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        if let Some((name, value)) = field.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length.ok_or("an answer without Content-Length")?;
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("read body: {e}"))?;
    Ok(reader)
}

#[tokio::main(flavor = "current_thread")]
#[expect(clippy::print_stdout, reason = "`held N` is what the script waits for")]
async fn main() -> std::process::ExitCode {
    let args = Arc::new(Args::parse());
    let mut held = Vec::with_capacity(args.connections);
    let mut failed = 0usize;
    let mut first_failure = None;
    let mut opening = JoinSet::new();
    for started in 0..args.connections {
        if started >= args.parallel
            && let Some(result) = opening.join_next().await
        {
            tally(result, &mut held, &mut failed, &mut first_failure);
        }
        let args = Arc::clone(&args);
        opening.spawn(async move { tokio::time::timeout(ANSWER_TIME, open(&args)).await });
    }
    while let Some(result) = opening.join_next().await {
        tally(result, &mut held, &mut failed, &mut first_failure);
    }
    println!("held {}", held.len());
    if let Some(e) = &first_failure {
        eprintln!("{failed} connections failed; the first: {e}");
    }
    // Idle until the script is done measuring.
    let _ =
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await;
    drop(held);
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

type Opened = Result<Result<BufReader<TcpStream>, String>, tokio::time::error::Elapsed>;

fn tally(
    result: Result<Opened, tokio::task::JoinError>,
    held: &mut Vec<BufReader<TcpStream>>,
    failed: &mut usize,
    first_failure: &mut Option<String>,
) {
    let failure = match result {
        Ok(Ok(Ok(connection))) => {
            held.push(connection);
            return;
        }
        Ok(Ok(Err(e))) => e,
        Ok(Err(_)) => "no answer in time".to_owned(),
        Err(e) => e.to_string(),
    };
    *failed += 1;
    first_failure.get_or_insert(failure);
}
