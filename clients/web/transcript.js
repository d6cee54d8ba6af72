// The caption and interpretation panes: partials replaced in place by id, finals appended;
// and the transcript as WebVTT. No I/O beyond the DOM elements it is given.

export function formatTime(seconds) {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor(ms / 60_000) % 60;
  const s = Math.floor(ms / 1000) % 60;
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(h)}:${pad(m)}:${pad(s)}.${pad(ms % 1000, 3)}`;
}

// WebVTT of the final captions: one cue per final, in order (the server's media times).
export function toWebVTT(finals) {
  const cues = finals.map((c, i) => `${i + 1}\n${formatTime(c.start)} --> ${formatTime(Math.max(c.end, c.start + 0.001))}\n${c.text}\n`);
  return ["WEBVTT", "", ...cues].join("\n");
}

// One pane whose entries are keyed by id: a partial replaces the entry with its id, a final
// fixes it (and the next partial of a new id starts a new entry below).
class Pane {
  constructor(element, idField) {
    this.element = element;
    this.idField = idField;
    this.entries = new Map(); // id -> <p>
  }

  clear() {
    this.element.replaceChildren();
    this.entries.clear();
  }

  show(event, final, label = "") {
    const id = event[this.idField];
    let p = this.entries.get(id);
    if (!p) {
      p = document.createElement("p");
      this.entries.set(id, p);
      this.element.append(p);
    }
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = formatTime(event.start).slice(3, 8);
    p.className = final ? "final" : "partial";
    p.dataset.id = id;
    p.replaceChildren(time, document.createTextNode(label + event.text));
    this.element.scrollTop = this.element.scrollHeight;
  }
}

export class Transcript {
  constructor(captionsElement, interpretationsElement) {
    this.captions = new Pane(captionsElement, "caption_id");
    this.interpretations = new Pane(interpretationsElement, "interpretation_id");
    this.finals = []; // every caption.final, in order
  }

  clear() {
    this.captions.clear();
    this.interpretations.clear();
    this.finals = [];
  }

  // Returns true when the event was one of ours.
  handle(event) {
    switch (event.type) {
      case "caption.partial":
        this.captions.show(event, false);
        return true;
      case "caption.final":
        this.finals.push(event);
        this.captions.show(event, true);
        return true;
      case "interpretation.partial":
      case "interpretation.final":
        this.interpretations.show(event, event.type === "interpretation.final", `[${event.kind}] `);
        return true;
      default:
        return false;
    }
  }

  text() {
    return this.finals.map((c) => c.text).join(" ");
  }

  webVTT() {
    return toWebVTT(this.finals);
  }
}
