"""Networks: voice_encoder (Table 1), face_encoder (VGG-Face), face_decoder + warp (Cole et al.),
speech2face (the composition that is exported). They take plain arguments; `s2f_tf.factory` builds
them from a config."""
