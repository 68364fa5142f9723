pub mod candle_mlp;
