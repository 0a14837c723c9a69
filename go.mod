module github.com/tether-edge/tether

go 1.24
