//! Writing results to stdout. A reader that goes away early (`niso search x | head -1`) ends
//! the program quietly, as it does for other Unix tools, instead of a panic.

use std::io::Write;

/// Writes `args` to stdout; on a closed pipe, exits at once with status 0.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(args).and_then(|()| out.flush()) {
        gone(&error);
    }
}

/// Writes raw bytes to stdout, with the same rule.
pub fn write_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_all(bytes).and_then(|()| out.flush()) {
        gone(&error);
    }
}

fn gone(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("niso: error: could not write to standard output: {error}");
    std::process::exit(i32::from(crate::exit::FAILURE));
}

/// `println!` for results: see the module doc.
macro_rules! outln {
    () => { $crate::output::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for results: see the module doc.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*)) };
}
