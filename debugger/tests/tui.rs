//! The terminal UI driven without a terminal: synthetic keys and command
//! lines into `App`, the screen drawn on ratatui's `TestBackend`, and the
//! assertions on what a user would see there.

mod common;

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ringside_debugger::tui::{App, Focus, Tick, CHANGED, DIFFERENT};
use ringside_debugger::StopCause;

fn demo_app() -> App {
    let (d, com1) = common::debugger("demo", "interp");
    App::new(d, com1)
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

/// Type a command on the command line as a user does: `:`, the text,
/// Enter.
fn command(app: &mut App, line: &str) {
    app.handle_key(key(':'));
    for c in line.chars() {
        app.handle_key(key(c));
    }
    app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
}

/// Run the UI's running loop (without a terminal) until the guest stops.
fn run_until_stopped(app: &mut App) {
    for _ in 0..200_000 {
        if app.tick() == Tick::JustStopped {
            return;
        }
        assert!(app.is_running(), "the run ended without a stop");
    }
    panic!("the guest did not stop");
}

fn draw(app: &mut App) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(160, 50)).expect("a test terminal");
    terminal.draw(|f| app.draw(f)).expect("drawing cannot fail");
    terminal.backend().buffer().clone()
}

fn screen(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in 0..area.height {
        for x in 0..area.width {
            out.push_str(buffer[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// Where `needle` starts in the register column (the first occurrence),
/// as (x, y).
fn find(buffer: &Buffer, needle: &str) -> Option<(u16, u16)> {
    let area = buffer.area;
    for y in 0..area.height {
        let row: Vec<&str> = (0..30).map(|x| buffer[(x, y)].symbol()).collect();
        let text: String = row.concat();
        if let Some(byte) = text.find(needle) {
            // Cells hold one character each: count characters, not bytes.
            let x = text[..byte].chars().count() as u16;
            return Some((x, y));
        }
    }
    None
}

#[test]
fn a_caught_page_fault_shows_cr2_and_the_faulting_user_instruction() {
    let mut app = demo_app();
    command(&mut app, "catch vector 14");
    command(&mut app, "input run hello");
    app.handle_key(key('c'));
    assert!(app.is_running(), "c continues");
    run_until_stopped(&mut app);
    let cr2 = app.debugger.main.machine.cpu.cr2;
    assert_eq!(cr2, 0x7fff_fffc, "the first user stack touch faults");
    let shown = screen(&draw(&mut app));
    println!("{shown}");
    assert!(shown.contains("CR2=7ffffffc"), "{shown}");
    assert!(shown.contains("interrupted at 001b:"), "{shown}");
    assert!(shown.contains("<vector_14>"), "{shown}");
}

/// The terminal UI on the recompiler: the page-fault catch stops at the
/// same fault as on the interpreter, and compare mode against a jit
/// partner shows no divergence over a thousand steps.
#[test]
fn the_ui_catches_the_same_page_fault_and_compares_cleanly_on_jit() {
    let (d, com1) = common::debugger("demo", "jit");
    let mut app = App::new(d, com1);
    command(&mut app, "catch vector 14");
    command(&mut app, "input run hello");
    app.handle_key(key('c'));
    run_until_stopped(&mut app);
    assert_eq!(app.debugger.main.machine.cpu.cr2, 0x7fff_fffc);
    let shown = screen(&draw(&mut app));
    assert!(shown.contains("CR2=7ffffffc"), "{shown}");
    assert!(shown.contains("<vector_14>"), "{shown}");

    let mut app = demo_app();
    let (partner, _) = common::machine("demo");
    app.debugger
        .set_partner(partner, "jit")
        .expect("the recompiler exists");
    command(&mut app, "step 1000");
    let shown = screen(&draw(&mut app));
    assert!(shown.contains("Registers (compare)"), "{shown}");
    assert!(!shown.contains("DIVERGED"), "{shown}");
    assert!(!shown.contains("divergence"), "{shown}");
}

#[test]
fn compare_mode_shows_no_divergence_until_the_partner_is_corrupted() {
    let mut app = demo_app();
    let (partner, _) = common::machine("demo");
    app.debugger
        .set_partner(partner, "interp")
        .expect("the interpreter exists");
    command(&mut app, "step 1000");
    let shown = screen(&draw(&mut app));
    assert!(shown.contains("Registers (compare)"), "{shown}");
    assert!(!shown.contains("divergence"), "{shown}");
    assert!(!shown.contains("DIVERGED"), "{shown}");

    command(&mut app, "pset edi 0x1234");
    app.handle_key(key('s'));
    let buffer = draw(&mut app);
    let shown = screen(&buffer);
    println!("{shown}");
    assert!(
        shown.contains("divergence after 1000 instructions"),
        "{shown}"
    );
    assert!(shown.contains("* edi"), "{shown}");
    assert!(shown.contains("DIVERGED"), "{shown}");
    assert!(matches!(app.last_stop(), Some(StopCause::Divergence(_))));
    // The register pane marks the differing field in the partner's column.
    let (x, y) = find(&buffer, "* edi ").expect("edi is marked");
    assert_eq!(buffer[(x, y)].fg, DIFFERENT.fg.expect("a colour"));
}

#[test]
fn registers_a_step_changed_are_highlighted() {
    let mut app = demo_app();
    app.handle_key(key('s'));
    let buffer = draw(&mut app);
    let value_style = |name: &str| {
        let (x, y) = find(&buffer, &format!("{name} ")).expect("the register is shown");
        // The value starts after the name padded to 3 and a space.
        buffer[(x + 4, y)].clone()
    };
    let eip = value_style("eip");
    assert_eq!(eip.fg, CHANGED.fg.expect("a colour"), "eip moved");
    assert!(eip.modifier.contains(ratatui::style::Modifier::BOLD));
    let cs = value_style("cs ");
    assert_ne!(cs.fg, CHANGED.fg.expect("a colour"), "cs did not change");
}

#[test]
fn the_ui_draws_on_tiny_and_odd_terminals_without_panicking() {
    let mut app = demo_app();
    app.handle_key(key('s'));
    for (w, h) in [
        (1, 1),
        (10, 3),
        (63, 17),
        (64, 19),
        (80, 24),
        (200, 60),
        (0, 0),
    ] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("a test terminal");
        terminal.draw(|f| app.draw(f)).expect("drawing cannot fail");
    }
}

#[test]
fn b_sets_and_clears_a_breakpoint_at_the_cursor() {
    let mut app = demo_app();
    draw(&mut app);
    app.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    app.handle_key(key('b'));
    assert_eq!(app.debugger.breakpoint_addresses().len(), 1);
    let at = app.debugger.breakpoint_addresses()[0];
    assert!(
        at > app.debugger.main.machine.cpu.linear_eip(),
        "the cursor was one instruction below EIP"
    );
    let shown = screen(&draw(&mut app));
    assert!(shown.contains('●'), "{shown}");
    app.handle_key(key('c'));
    run_until_stopped(&mut app);
    assert_eq!(app.debugger.main.machine.cpu.linear_eip(), at);
    app.handle_key(key('b'));
    assert!(app.debugger.breakpoint_addresses().is_empty());
}

#[test]
fn esc_stops_a_running_guest_and_typed_keys_reach_com1() {
    let mut app = demo_app();
    app.handle_key(key('c'));
    for _ in 0..200 {
        app.tick();
    }
    app.handle_key(key('i'));
    assert_eq!(app.focus(), Focus::Input);
    for c in "run hello\r".chars() {
        app.handle_key(key(c));
    }
    app.handle_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
    assert_eq!(app.focus(), Focus::Keys, "Esc ends typing to the guest");
    for _ in 0..2_000 {
        app.tick();
    }
    assert!(app.is_running());
    app.handle_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
    assert!(!app.is_running(), "Esc stops");
    let shown = screen(&draw(&mut app));
    assert!(shown.contains("stopped: interrupted"), "{shown}");
    assert!(shown.contains("Hello from user space!"), "{shown}");
}

fn draw_at(app: &mut App, w: u16, h: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("a test terminal");
    terminal.draw(|f| app.draw(f)).expect("drawing cannot fail");
    screen(terminal.backend().buffer())
}

/// Issue 16 item 2: at 80x24 the output pane was 18 columns wide, so a
/// stop's report was cut (`stopped: breakpoin`), and the key bar lost
/// `: command` and `q quit`. The compact layout shows the whole reply,
/// the disassembly's instructions and the keys that matter.
#[test]
fn at_80x24_replies_instructions_and_the_key_bar_are_whole() {
    let mut app = demo_app();
    command(&mut app, "break kmain");
    app.handle_key(key('c'));
    run_until_stopped(&mut app);
    let shown = draw_at(&mut app, 80, 24);
    println!("{shown}");
    assert!(shown.contains("stopped: breakpoint #1"), "{shown}");
    assert!(shown.contains("push ebp"), "the disassembly: {shown}");
    let bar = shown.lines().last().expect("a key bar");
    for k in [": cmd", "? help", "q quit"] {
        assert!(bar.contains(k), "{k:?} in {bar:?}");
    }
    // And on a large terminal the full layout with every pane.
    let large = draw_at(&mut app, 200, 50);
    for pane in [
        "Registers",
        "Disassembly",
        "Memory",
        "COM1",
        "Stack",
        "Output",
        "Engine",
    ] {
        assert!(large.contains(pane), "{pane}: {large}");
    }
}

/// Issue 16 item 2: output lines were cut at the pane's right edge; they
/// wrap now, in every layout.
#[test]
fn long_output_lines_wrap_instead_of_being_cut() {
    let mut app = demo_app();
    command(&mut app, "help");
    for (w, h) in [(80, 24), (120, 40), (200, 50)] {
        let shown = draw_at(&mut app, w, h);
        // The last line of the help, whole once its wrapped pieces are
        // joined (it is longer than the output pane at each size).
        let joined: String = shown.lines().map(|l| l.replace(['│', ' '], "")).collect();
        assert!(joined.contains("?horF1thekeys,qquit"), "{w}x{h}: {shown}");
    }
}

/// Issue 16 item 3: `?` and `h` did nothing. `?`, `h` and F1 show the
/// keys over the panes; any key closes the help and does nothing else.
#[test]
fn question_mark_h_and_f1_show_the_keys_and_any_key_closes_them() {
    let mut app = demo_app();
    for open in [
        key('?'),
        key('h'),
        KeyEvent::new(KeyCode::F(1), KeyModifiers::NONE),
    ] {
        app.handle_key(open);
        assert!(app.help_shown());
        let shown = draw_at(&mut app, 80, 24);
        assert!(shown.contains("Any key closes this help."), "{shown}");
        assert!(shown.contains("step one instruction"), "{shown}");
        let before = app.debugger.main.machine.clock.icount;
        app.handle_key(key('s'));
        assert!(!app.help_shown());
        assert_eq!(
            app.debugger.main.machine.clock.icount, before,
            "the closing key did not step"
        );
    }
}

/// Issue 16 item 2: Tab shows the other panes a small terminal has no
/// room for, one at a time beside the output.
#[test]
fn tab_cycles_the_side_pane_of_a_small_terminal() {
    let mut app = demo_app();
    let mut titles = Vec::new();
    for _ in 0..4 {
        let shown = draw_at(&mut app, 80, 24);
        let title = ["COM1", "Stack", "Memory", "Engine"]
            .into_iter()
            .find(|t| shown.contains(t))
            .unwrap_or_else(|| panic!("no side pane: {shown}"));
        titles.push(title);
        app.handle_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
    }
    assert_eq!(titles, ["COM1", "Stack", "Memory", "Engine"]);
}

/// Issue 16 item 3: a script of commands runs without a terminal; run
/// commands return at the stop; replies go to one stream and errors to
/// the other; `quit` ends the script.
#[test]
fn a_batch_script_runs_each_command_to_its_reply() {
    let mut app = demo_app();
    let script = "# a comment\nbreak kmain\nc\nwhere\nno-such-command\n\nquit\nwhere\n";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let end = ringside_debugger::tui::run_batch(&mut app, script.as_bytes(), &mut out, &mut err)
        .expect("in-memory streams");
    let (out, err) = (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    );
    println!("{out}---\n{err}");
    assert_eq!(end.commands, 5, "comments and blank lines are skipped");
    assert_eq!(end.errors, 1);
    assert!(end.quit);
    assert!(
        out.starts_with("> break kmain\n#1 break at linear"),
        "{out}"
    );
    assert!(out.contains("> c\nstopped: breakpoint #1\n"), "{out}");
    assert!(out.contains("> where\n0008:00100b50 <kmain>"), "{out}");
    assert_eq!(
        out.matches("> where").count(),
        1,
        "nothing after quit: {out}"
    );
    assert!(err.contains("unknown command 'no-such-command'"), "{err}");
}
