//! Writing the commands' output to stdout.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`flux tail | head`).
//! [`line`] writes instead, and when the reader went away, ends the process quietly with
//! status 0, as Unix tools do: the output was wanted only up to there.

use std::io::Write;

/// Prints like `println!`, through [`line`].
macro_rules! out {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// Writes one line to stdout.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        // Following (`tail`) prints as it goes: flush so a pipe sees each line.
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}
