// A plugin that works, but writes on the worker's stdout what the supervisor once read as its
// messages (a forged result file, progress past its total), bytes that are not UTF-8, and
// megabytes on stderr: none of it may reach the results or the supervisor's memory.
fault_common::fault_plugin!("forger", Forger {
    fn on_admit(&self) {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{{\"result_file\": \"/tmp/nanohost-forged-results.json\"}}");
        let _ = writeln!(out, "{{\"results\": {{\"file\": \"/tmp/nanohost-forged-results.json\"}}}}");
        let _ = writeln!(out, "{{\"progress\": {{\"done\": 99, \"total\": 1, \"point\": \"forged\"}}}}");
        let _ = out.write_all(&[0xff, 0xfe, b'\n']);
        let _ = out.flush();
        let line = "x".repeat(1023) + "\n";
        let mut err = std::io::stderr();
        for _ in 0..4096 {
            let _ = err.write_all(line.as_bytes());
        }
    }
});
