fn main() -> std::process::ExitCode {
    patch_kustomize::run(std::env::args_os()).into()
}
