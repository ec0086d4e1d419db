//! `flux trace debug ID`: step through a request span by span in the terminal — each
//! span's input, output and time, and (expanded) its attributes, events and the rows its
//! statements changed. The steps come from `flux_read::steps`; this only draws them
//! (ratatui over crossterm).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use flux_read::steps::Step;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Text};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::{DefaultTerminal, Frame};

use super::state::{open_request, short};
use crate::render::duration;

/// Runs the debugger on a request of the record in `dir`.
pub fn run(dir: &Path, given: &str) -> anyhow::Result<()> {
    let (store, id) = open_request(dir, given)?;
    let tree = flux_read::trace(&store, &id)?;
    let steps = flux_read::steps::steps(&store, &id, &tree)?;
    if steps.is_empty() {
        anyhow::bail!("no spans recorded for {}", short(Some(&id)));
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "flux trace debug is interactive and needs a terminal; for a script, use `flux trace {} --format json`",
            short(Some(&id))
        );
    }
    let title = match store.request(&id)? {
        Some(s) => format!(
            "{}  {} {}  {}  {}",
            short(Some(&id)),
            s.method.as_deref().unwrap_or(""),
            s.path.as_deref().unwrap_or(&s.name),
            s.status.map(|c| c.to_string()).unwrap_or_default(),
            duration(s.duration)
        ),
        None => short(Some(&id)),
    };
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = step_through(&mut terminal, &title, &steps);
    ratatui::restore();
    result
}

/// The viewer's state.
struct View {
    at: usize,
    expanded: bool,
    scroll: u16,
}

fn step_through(terminal: &mut DefaultTerminal, title: &str, steps: &[Step]) -> anyhow::Result<()> {
    let mut view = View {
        at: 0,
        expanded: false,
        scroll: 0,
    };
    loop {
        // A full repaint per step: every line of the new step is written whole.
        terminal.clear()?;
        terminal.draw(|f| draw(f, title, steps, &view))?;
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
            KeyCode::Down | KeyCode::Char('j') | KeyCode::Char('n') | KeyCode::Right
                if view.at + 1 < steps.len() =>
            {
                view.at += 1;
                view.scroll = 0;
            }
            KeyCode::Up | KeyCode::Char('k') | KeyCode::Char('p') | KeyCode::Left
                if view.at > 0 =>
            {
                view.at -= 1;
                view.scroll = 0;
            }
            KeyCode::Home | KeyCode::Char('g') => view.at = 0,
            KeyCode::End | KeyCode::Char('G') => view.at = steps.len() - 1,
            KeyCode::Char('e') | KeyCode::Enter => view.expanded = !view.expanded,
            KeyCode::PageDown | KeyCode::Char(' ') => view.scroll = view.scroll.saturating_add(10),
            KeyCode::PageUp => view.scroll = view.scroll.saturating_sub(10),
            _ => {}
        }
    }
}

fn draw(f: &mut Frame, title: &str, steps: &[Step], view: &View) {
    let step = &steps[view.at];
    let [head, body, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let marker = if step.failed { "  ✗" } else { "" };
    let who = match (&step.service, step.source) {
        (Some(s), _) => s.clone(),
        (None, flux_store::SpanSource::Proxy) => "flux proxy".into(),
        (None, _) => "app".into(),
    };
    f.render_widget(
        Paragraph::new(vec![
            Line::from(format!("flux trace debug  {title}")).bold(),
            Line::from(format!(
                "Step {}/{}  {}{}{marker}   ({who})",
                view.at + 1,
                steps.len(),
                "  ".repeat(step.depth),
                step.name
            )),
        ]),
        head,
    );
    let section = |name: &'static str| {
        Line::from(name).style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED))
    };
    let mut text = Text::default();
    text.push_line(section("Input"));
    push_all(&mut text, &step.input, "(nothing recorded)");
    text.push_line("");
    text.push_line(section("Output"));
    push_all(&mut text, &step.output, "(nothing recorded)");
    for c in &step.changes {
        let m = &c.mutation;
        let key = m.key.as_ref().map(|k| k.join(",")).unwrap_or_default();
        text.push_line(format!(
            "{} {}.id={key}  ({})",
            m.op,
            m.table,
            super::state::fate(c.outcome)
        ));
        if view.expanded {
            let image = |v: &Option<serde_json::Value>| {
                v.as_ref().map_or("—".to_string(), |v| v.to_string())
            };
            text.push_line(format!("    before {}", image(&m.before)));
            text.push_line(format!("    after  {}", image(&m.after)));
        }
    }
    text.push_line("");
    text.push_line(section("Time"));
    text.push_line(format!(
        "starts at +{}, takes {}",
        duration(step.offset),
        duration(step.duration)
    ));
    if view.expanded {
        text.push_line("");
        text.push_line(section("Attributes"));
        for (k, v) in &step.attributes {
            text.push_line(format!("{k} = {v}"));
        }
        if !step.events.is_empty() {
            text.push_line("");
            text.push_line(section("Events"));
            for e in &step.events {
                for line in e.lines() {
                    text.push_line(line.to_string());
                }
            }
        }
    }
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .scroll((view.scroll, 0))
            .block(Block::new().borders(Borders::TOP | Borders::BOTTOM)),
        body,
    );
    let expand = if view.expanded { "collapse" } else { "expand" };
    f.render_widget(
        Paragraph::new(format!(
            "↓ next  ↑ prev  e {expand}  space/PgUp scroll  q quit"
        ))
        .dim(),
        keys,
    );
}

fn push_all(text: &mut Text, lines: &[String], empty: &str) {
    if lines.is_empty() {
        text.push_line(Line::from(empty.to_string()).dim());
    }
    for l in lines {
        for part in l.lines() {
            text.push_line(part.to_string());
        }
        if l.is_empty() {
            text.push_line("");
        }
    }
}
