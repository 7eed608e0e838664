import { defineConfig } from 'vite';

// Fixed file names (no content hashes): the Rust crate includes exactly
// dist/index.html, dist/assets/app.js and dist/assets/app.css.
export default defineConfig({
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    rollupOptions: {
      output: {
        entryFileNames: 'assets/app.js',
        chunkFileNames: 'assets/app-[name].js',
        assetFileNames: 'assets/app[extname]',
      },
    },
  },
  test: { environment: 'node' },
});
