fn main() -> std::process::ExitCode {
    mask_db::run(std::env::args_os()).into()
}
