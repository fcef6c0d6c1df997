module github.com/astrid-runtime/astrid/bindings/go

go 1.21
