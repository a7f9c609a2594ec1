//! Serves the bare repositories of a directory over git's smart HTTP protocol with basic auth,
//! until killed: the harness's git server for benchmarks and local runs.
//!
//! Usage: testkit-git-server DIR TOKEN   (prints `http://127.0.0.1:PORT` on its first line)

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: testkit-git-server DIR TOKEN");
        std::process::exit(2);
    };
    let server = testkit::GitServer::serve_dir(std::path::Path::new(&dir), &token);
    println!("{}", server.base_url());
    loop {
        std::thread::park();
    }
}
