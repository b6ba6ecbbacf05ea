// s2f page: the AudioWorklet that hands the microphone's samples (first channel, the context's
// rate) to the page, one 128-sample block at a time. Loaded by s2f.js with audioWorklet.addModule.
class S2FCapture extends AudioWorkletProcessor {
  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) this.port.postMessage(channels[0].slice(0));
    return true;
  }
}
registerProcessor("s2f-capture", S2FCapture);
